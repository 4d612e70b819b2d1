/**
 * `maxwell replay state [--to SEQ]`: rebuild the kernel's state (and the memory store) from the
 * log and compare them with the live ones, or show the kernel's state as of a sequence.
 */
import type { Command } from "commander";
import { ErrorCode, MaxwellError } from "../../protocol/mod.js";
import type { AdminClient } from "../../runtime/admin-client.js";
import type { MemoryVerifyResult, StateReplayResult } from "../../runtime/admin.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

/** Exit code when a rebuilt state differs from the live one. */
const DIFFERENT = 4;

/** How long a memory rebuild may take (it reads the whole log into a scratch store). */
const MEMORY_VERIFY_TIMEOUT_MS = 30 * 60_000;

type MemoryOutcome = { compared: MemoryVerifyResult } | { skipped: string };

interface StateOptions {
  to?: string;
  full?: boolean;
  memory?: boolean;
  json?: boolean;
}

export function registerReplayState(replay: Command, globals: () => GlobalOptions): void {
  replay
    .command("state")
    .description(
      "rebuild every projection from the log (the kernel's identities, budgets, approvals, tools, labels and open work; the memory store) and compare digests with the live system; with --to, show the kernel's state as of that seq",
    )
    .option("--to <seq>", "fold the log only up to this seq and show the kernel's state then (time travel, nothing re-run); starts from the nearest saved snapshot before it")
    .option("--full", "with --to: fold from the start of the log, not from a snapshot")
    .option("--no-memory", "do not rebuild the memory store (it is rebuilt into a scratch store beside the live one otherwise)")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      [
        "",
        "Without --to, the kernel folds from the first event and compares every state snapshot it saved",
        "with the fold on the way, and the memory service rebuilds the log into a scratch store up to",
        "the sequence its live store reflects. Any difference makes the result DIFFERENT.",
        "Exit codes: 0 identical (or --to shown), 4 different, 1 failure.",
      ].join("\n"),
    )
    .action(async (opts: StateOptions) => {
      try {
        await replayState(globals(), opts);
      } catch (err) {
        fail(err);
      }
    });
}

async function replayState(g: GlobalOptions, opts: StateOptions): Promise<void> {
  const to = opts.to === undefined ? undefined : Number(opts.to);
  if (to !== undefined && (!Number.isInteger(to) || to < 1)) throw new MaxwellError(ErrorCode.BadRequest, `--to must be a sequence number >= 1, not '${opts.to}'`);
  const admin = await cliContext(g).admin();
  try {
    const kernel = await admin.replayState(to, { full: Boolean(opts.full) });
    if (to !== undefined) {
      const from = kernel.fromSnapshot !== undefined ? `the snapshot at #${kernel.fromSnapshot} and ${kernel.folded} events after it` : `${kernel.folded} events`;
      process.stdout.write(opts.json ? JSON.stringify(kernel, null, 2) + "\n" : `state as of #${kernel.seq} (${from}, folded in ${kernel.ms} ms), digest ${kernel.replayed}\n${JSON.stringify(kernel.summary, null, 2)}\n`);
      return;
    }
    const memory = opts.memory === false ? { skipped: "not asked for (--no-memory)" } : await verifyMemory(admin);
    const identical = kernel.identical === true && (!("compared" in memory) || memory.compared.identical);
    if (opts.json) process.stdout.write(JSON.stringify({ identical, kernel, memory }, null, 2) + "\n");
    else process.stdout.write(report(identical, kernel, memory));
    if (!identical) process.exitCode = DIFFERENT;
  } finally {
    await admin.close();
  }
}

/** The memory service's comparison, or why there is none (no memory service runs). */
async function verifyMemory(admin: AdminClient): Promise<MemoryOutcome> {
  try {
    return { compared: await admin.memory<MemoryVerifyResult>({ op: "verify" }, MEMORY_VERIFY_TIMEOUT_MS) };
  } catch (err) {
    const e = MaxwellError.from(err);
    if (e.code === ErrorCode.Unavailable || e.code === ErrorCode.Timeout) return { skipped: e.message };
    throw err;
  }
}

function report(identical: boolean, k: StateReplayResult, memory: MemoryOutcome): string {
  const lines = [
    `${identical ? "identical" : "DIFFERENT"}: rebuilt from the log up to #${k.seq}`,
    `  kernel  ${k.identical ? "identical" : "DIFFERENT"}: ${k.folded} events folded in ${k.ms} ms (${k.eventsPerSec} events/s)`,
    `          replayed ${k.replayed}`,
    `          live     ${k.live ?? "?"}`,
    ...k.snapshots.map((c) => `          snapshot #${c.seq} ${c.unusable !== undefined ? `unusable, the kernel passes it over: ${c.unusable}` : c.identical ? "matches the fold" : "DIFFERS from the fold"}`),
  ];
  if ("compared" in memory) {
    const m = memory.compared;
    lines.push(
      `  memory  ${m.identical ? "identical" : "DIFFERENT"}: ${m.applied} writes up to #${m.appliedSeq} rebuilt into a scratch store in ${m.ms} ms`,
      `          replayed ${m.replayed}`,
      `          live     ${m.live}`,
    );
  } else {
    lines.push(`  memory  not compared: ${memory.skipped}`);
  }
  return lines.join("\n") + "\n";
}
