/** `maxwell policy test FILE` (what-if against the recorded decisions) and `maxwell policy apply FILE`. */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, MaxwellError } from "../../protocol/mod.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

function readPolicy(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new MaxwellError(ErrorCode.NotFound, `cannot read policy file ${file}: ${(err as Error).message}`);
  }
}

export function registerPolicy(program: Command, globals: () => GlobalOptions): void {
  const cmd = program.command("policy").description("try a policy set against the recorded decisions, or install one");
  cmd
    .command("test <file>")
    .description("re-evaluate the decisions in the log under FILE and print every one that would change (the live policy is untouched)")
    .option("--since <seq>", "only decisions after this log sequence")
    .option("--json", "print JSON")
    .option("--exit-code", "exit 4 when any decision would change (for CI)")
    .action(async (file: string, opts: { since?: string; json?: boolean; exitCode?: boolean }) => {
      try {
        const text = readPolicy(file);
        const since = opts.since === undefined ? undefined : Number(opts.since);
        if (since !== undefined && (!Number.isInteger(since) || since < 0)) throw new MaxwellError(ErrorCode.BadRequest, `--since must be a log sequence number, not ${opts.since}`);
        const admin = await cliContext(globals()).admin();
        try {
          const r = await admin.policyTest({ text, ...(since !== undefined ? { since } : {}) });
          if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + "\n");
          else {
            process.stdout.write(
              `candidate set ${r.policySet.slice(0, 12)}…: ${r.evaluated} decisions re-evaluated, ${r.unchanged} unchanged, ${r.changed.length} would change` +
                (r.skipped ? `, ${r.skipped} skipped (identity unknown)` : "") +
                "\n",
            );
            for (const c of r.changed) {
              process.stdout.write(
                `#${String(c.seq).padEnd(6)} ${new Date(c.at).toISOString().slice(11, 23)}  ${c.actor} ${c.action} ${c.resource} for ${c.principal}: ${c.was} → ${c.now}  [${c.policies.join(", ") || "default deny"}]\n`,
              );
            }
          }
          if (opts.exitCode && r.changed.length > 0) process.exit(4);
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
  cmd
    .command("apply <file>")
    .description("validate FILE against the Maxwell schema and install it; the change is logged with its hash")
    .action(async (file: string) => {
      try {
        const text = readPolicy(file);
        const admin = await cliContext(globals()).admin();
        try {
          const r = await admin.policyApply(text);
          process.stdout.write(
            r.seq === 0
              ? `policy set ${r.policySet.slice(0, 12)}… is already in force\n`
              : `policy set ${r.policySet.slice(0, 12)}… in force (logged at #${r.seq}): ${r.policies.join(", ")}\n`,
          );
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
}
