/** `maxwell agent add|list` and `maxwell principal add|list`. */
import { resolve } from "node:path";
import type { Command } from "commander";
import { writeSecret } from "../../transport/identity.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function registerIdentity(program: Command, globals: () => GlobalOptions, kind: "agent" | "principal"): void {
  const cmd = program.command(kind).description(kind === "agent" ? "register and list agents" : "register and list principals (people and services work runs for)");
  cmd
    .command("add <name>")
    .description(`register a${kind === "agent" ? "n agent" : " principal"} and write its NATS creds file (mode 0600)`)
    .option("-g, --group <group>", "join a policy group (repeatable)", collect, [])
    .option("-o, --out <file>", "where to write the creds file (default: <data>/creds/<name>.creds)")
    .action(async (name: string, opts: { group: string[]; out?: string }) => {
      try {
        const ctx = cliContext(globals());
        const admin = await ctx.admin();
        try {
          const r = await admin.register({ name, kind, groups: opts.group });
          const path = resolve(opts.out ?? ctx.layout.credsOf(name));
          writeSecret(path, r.creds);
          process.stdout.write(`registered ${kind} ${r.name}${r.groups.length ? ` (groups: ${r.groups.join(", ")})` : ""}\ncreds: ${path}\n`);
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
  cmd
    .command("list")
    .description(`list registered ${kind}s`)
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      try {
        const admin = await cliContext(globals()).admin();
        try {
          const all = (await admin.list()).filter((i) => i.kind === kind);
          if (opts.json) process.stdout.write(JSON.stringify(all, null, 2) + "\n");
          else if (all.length === 0) process.stdout.write(`no ${kind}s registered\n`);
          else for (const i of all) process.stdout.write(`${i.name.padEnd(24)} ${i.groups.join(",").padEnd(24)} ${(i.control ?? (kind === "agent" ? "running" : "")).padEnd(12)} ${i.publicKey}\n`);
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
}
