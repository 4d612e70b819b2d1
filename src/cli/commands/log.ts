/**
 * `maxwell log`: the log, readably, with filters; `--follow` keeps printing.
 * `maxwell log export`: a range of the log as a bundle a third party can verify offline.
 */
import { createWriteStream, rmSync, type WriteStream } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, EventType, MaxwellError, decodeMap, type LogEvent } from "../../protocol/mod.js";
import { BundleWriter } from "../../runtime/bundle.js";
import { isProcessAlive } from "../../runtime/supervisor.js";
import { cliContext, fail, type CliContext, type GlobalOptions } from "../context.js";
import { formatEvent, involves } from "../format.js";

interface LogOptions {
  agent?: string;
  principal?: string;
  trace?: string;
  type?: string;
  from?: string;
  follow?: boolean;
  json?: boolean;
}

export function registerLog(program: Command, globals: () => GlobalOptions): void {
  const log = program
    .command("log")
    .description("show the log: every decision, message, reply and rejection, in order")
    .option("--agent <name>", "only events sent by, to, or about this agent")
    .option("--principal <name>", "only events on this principal's behalf")
    .option("--trace <id>", "only events of this trace (a prefix is enough)")
    .option("--type <type>", "only events of this type (message, reply, decision.denied, input.rejected, ...)")
    .option("--from <seq>", "start at this sequence")
    .option("-f, --follow", "keep printing new events")
    .option("--json", "one JSON object per line")
    .action(async (opts: LogOptions) => {
      try {
        await showLog(globals(), opts);
      } catch (err) {
        fail(err);
      }
    });
  log
    .command("export")
    .description("write entries FROM..TO as stored, with the anchor hash, the kernel key and the signed checkpoint that covers them, for 'maxwell verify --bundle' (format: docs/audit.md)")
    .option("--from <seq>", "first sequence (default 1)")
    .option("--to <seq>", "last sequence (default: the log's last)")
    .option("--out <file>", "write the bundle here (default: stdout)")
    .action(async (opts: { from?: string; to?: string; out?: string }) => {
      try {
        // `log` has its own --from and, as the parent, reads it first: take it from there.
        const from = opts.from ?? log.opts<LogOptions>().from;
        await exportLog(globals(), { ...opts, ...(from !== undefined ? { from } : {}) });
      } catch (err) {
        fail(err);
      }
    });
}

function seqOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new MaxwellError(ErrorCode.BadRequest, `${flag} must be a log sequence (1 or more), not '${value}'`);
  return n;
}

/** Whether a kernel is there to ask for a checkpoint (a running daemon, or --nats). */
function kernelReachable(ctx: CliContext, g: GlobalOptions): boolean {
  return Boolean(g.nats || process.env["MAXWELL_NATS_URL"] || isProcessAlive(ctx.daemon()?.pid));
}

async function exportLog(g: GlobalOptions, opts: { from?: string; to?: string; out?: string }): Promise<void> {
  const ctx = cliContext(g);
  const fromFlag = seqOption("--from", opts.from) ?? 1;
  const toFlag = seqOption("--to", opts.to);
  const source = await ctx.openLog("export");
  let out: WriteStream | undefined;
  let written = 0;
  let failed = false;
  try {
    let kernelKey: string | undefined;
    for await (const first of source.entries({ from: 1, follow: false })) {
      const genesis = decodeMap(first.data);
      if (first.seq === 1 && genesis["type"] === EventType.Genesis && typeof genesis["kernelKey"] === "string") kernelKey = genesis["kernelKey"];
      break;
    }
    if (kernelKey === undefined) throw new MaxwellError(ErrorCode.NotFound, "the log does not start with the kernel's genesis event, so there is no kernel key to export (run 'maxwell verify')");
    const lastSeq = await source.lastSeq();
    const to = toFlag ?? lastSeq;
    if (to > lastSeq) throw new MaxwellError(ErrorCode.BadRequest, `--to ${to} is past the end of the log (last sequence ${lastSeq})`);
    if (fromFlag > to) throw new MaxwellError(ErrorCode.BadRequest, `--from ${fromFlag} is after --to ${to}`);
    const writer = new BundleWriter({ from: fromFlag, to }, kernelKey, Date.now());
    const target: NodeJS.WritableStream = opts.out ? (out = createWriteStream(opts.out, { mode: 0o600 })) : process.stdout;
    const write = async (lines: string[]): Promise<void> => {
      if (lines.length === 0) return;
      written += lines.length;
      if (!target.write(lines.join("\n") + "\n")) await new Promise<void>((r) => target.once("drain", () => r()));
    };
    const pump = async (start: number): Promise<void> => {
      for await (const entry of source.entries({ from: start, follow: false })) {
        await write(writer.add(entry));
        if (writer.sealed) return;
      }
    };
    await pump(writer.start);
    if (!writer.sealed) {
      // The range reaches past the last checkpoint: ask the kernel for one (it would write one
      // within seconds anyway), then read on to it.
      if (!kernelReachable(ctx, g)) {
        throw new MaxwellError(ErrorCode.Unavailable, `entries up to #${to} are not yet covered by a signed checkpoint and no kernel is running to write one: start the daemon, or export a range that ends at or before the last checkpoint (#${writer.lastSeq} is the last entry read)`);
      }
      const admin = await ctx.admin();
      try {
        await admin.checkpoint();
      } finally {
        await admin.close();
      }
      await pump(writer.lastSeq + 1);
      if (!writer.sealed) throw new MaxwellError(ErrorCode.Internal, `the kernel wrote a checkpoint but no checkpoint covering #${to} was read back`);
    }
    if (writer.gaps.length > 0) process.stderr.write(`warning: entries ${writer.gaps.slice(0, 5).map((s) => `#${s}`).join(", ")}${writer.gaps.length > 5 ? ", …" : ""} are missing from the log; the bundle will not verify (run 'maxwell verify')\n`);
    if (opts.out) process.stderr.write(`exported #${fromFlag}..#${to} (${written - 1} entries with the seal up to #${writer.lastSeq}) to ${opts.out}\n`);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await source.close();
    if (out) await new Promise<void>((resolve, reject) => (out as WriteStream).end((err?: Error | null) => (err ? reject(err) : resolve())));
    // A bundle that stopped short would only fail verification later: leave none behind.
    if (failed && opts.out) rmSync(opts.out, { force: true });
  }
}

async function showLog(g: GlobalOptions, opts: LogOptions): Promise<void> {
  const ctx = cliContext(g);
  const source = await ctx.openLog("log");
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const match = (e: LogEvent): boolean => {
    const r = e as unknown as Record<string, unknown>;
    if (opts.agent && !involves(e, opts.agent)) return false;
    if (opts.principal && r["principal"] !== opts.principal) return false;
    if (opts.trace && !(typeof r["trace"] === "string" && r["trace"].startsWith(opts.trace))) return false;
    if (opts.type && e.type !== opts.type) return false;
    return true;
  };
  try {
    const from = opts.from !== undefined ? Number(opts.from) : 1;
    for await (const entry of source.entries({ from, follow: Boolean(opts.follow), signal: abort.signal })) {
      let event: LogEvent;
      try {
        event = decodeMap(entry.data) as unknown as LogEvent;
      } catch {
        process.stdout.write(`#${entry.seq} (undecodable entry on ${entry.subject})\n`);
        continue;
      }
      if (!match(event)) continue;
      process.stdout.write((opts.json ? JSON.stringify({ subject: entry.subject, ...event }) : formatEvent(event)) + "\n");
    }
  } finally {
    await source.close();
  }
}
