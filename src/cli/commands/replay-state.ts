/** `maxwell replay state [--to SEQ]`: rebuild the kernel's state from the log and compare it with the live one. */
import type { Command } from "commander";
import { ErrorCode, MaxwellError } from "../../protocol/mod.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

/** Exit code when the rebuilt state differs from the live one. */
const DIFFERENT = 4;

export function registerReplayState(replay: Command, globals: () => GlobalOptions): void {
  replay
    .command("state")
    .description("rebuild every kernel projection (identities, budgets, approvals, tools, labels, open work) from the log and compare its digest with the live kernel's; with --to, show the state as of that seq")
    .option("--to <seq>", "fold the log only up to this seq and show the state then (time travel, nothing re-run)")
    .option("--json", "print the result as JSON")
    .action(async (opts: { to?: string; json?: boolean }) => {
      try {
        const to = opts.to === undefined ? undefined : Number(opts.to);
        if (to !== undefined && (!Number.isInteger(to) || to < 1)) throw new MaxwellError(ErrorCode.BadRequest, `--to must be a sequence number >= 1, not '${opts.to}'`);
        const admin = await cliContext(globals()).admin();
        try {
          const r = await admin.replayState(to);
          if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + "\n");
          else if (to !== undefined) process.stdout.write(`state as of #${r.seq} (${r.events} events folded in ${r.ms} ms), digest ${r.replayed}\n${JSON.stringify(r.summary, null, 2)}\n`);
          else {
            process.stdout.write(
              `${r.identical ? "identical" : "DIFFERENT"}: state rebuilt from ${r.events} events up to #${r.seq} in ${r.ms} ms (${r.eventsPerSec} events/s)\n  replayed ${r.replayed}\n  live     ${r.live ?? "?"}\n`,
            );
          }
          if (to === undefined && !r.identical) process.exitCode = DIFFERENT;
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
}
