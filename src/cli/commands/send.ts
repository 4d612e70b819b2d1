/** `maxwell send --as PRINCIPAL --to AGENT BODY`: inject work on a principal's behalf. */
import { existsSync } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, MaxwellError, SyscallOp, newScope, subjects, syscallId } from "../../protocol/mod.js";
import { connectNats } from "../../transport/connection.js";
import { SyscallClient } from "../../sdk/syscalls.js";
import { cliContext, fail, parseBody, type GlobalOptions } from "../context.js";

export function registerSend(program: Command, globals: () => GlobalOptions): void {
  program
    .command("send <body>")
    .description("send a message to an agent on a principal's behalf (body: JSON, or a plain string)")
    .requiredOption("--as <principal>", "the principal sending (uses <data>/creds/<principal>.creds)")
    .requiredOption("--to <agent>", "the agent receiving")
    .option("--as-creds <file>", "the principal's creds file, if not in the data dir")
    .option("--json", "print the result as JSON")
    .action(async (body: string, opts: { as: string; to: string; asCreds?: string; json?: boolean }) => {
      try {
        const ctx = cliContext(globals());
        const creds = opts.asCreds ?? ctx.layout.credsOf(opts.as);
        if (!existsSync(creds)) {
          throw new MaxwellError(ErrorCode.NotFound, `no creds for '${opts.as}' at ${creds} (register it: maxwell principal add ${opts.as})`);
        }
        const nc = await connectNats({ servers: ctx.natsUrl(), creds, name: `maxwell-cli:${opts.as}`, inboxPrefix: subjects.inboxPrefix(opts.as), reconnect: false });
        try {
          const client = new SyscallClient(nc, opts.as, { retryForMs: 5_000 });
          const r = await client.call(SyscallOp.Send, { id: syscallId(`cli-${newScope()}`, 0), to: opts.to, body: parseBody(body) });
          if (opts.json) process.stdout.write(JSON.stringify(r) + "\n");
          else process.stdout.write(`sent: event ${r.event} (seq ${r.seq}) to ${opts.to} as ${opts.as}${r.trace ? `, trace ${r.trace}` : ""}\n`);
        } finally {
          await nc.close();
        }
      } catch (err) {
        fail(err);
      }
    });
}
