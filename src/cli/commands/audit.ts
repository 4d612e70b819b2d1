/**
 * `maxwell audit trace|principal|agent`: what the log says about one piece of work (its causal
 * tree, with decisions, costs, holds and the checkpoints that sign it), or what one principal or
 * agent did. Reads the log like `maxwell log` (through the daemon, or the data dir's own server
 * when none runs); the trees and summaries are built in src/runtime/audit.ts. Each finds its
 * entries through the log index (src/runtime/log-index.ts) and reads only those: a trace's, or
 * what one principal or agent did; `--scan` reads the whole log instead.
 */
import { writeFileSync } from "node:fs";
import type { Command } from "commander";
import { decodeMap, type LogEvent } from "../../protocol/mod.js";
import { ActivityFold, TraceCollector, auditTrace, formatSummary, formatTrace, parseSince, renderTraceHtml, type Since, type SummarySubject, type TraceEvidence } from "../../runtime/audit.js";
import { LogIndex, indexedActivity, indexedTraceEvidence, isIndexableName, type IndexedActivity } from "../../runtime/log-index.js";
import { verifySignature } from "../../transport/identity.js";
import { cliContext, fail, type GlobalOptions, type LogSource } from "../context.js";

export function registerAudit(program: Command, globals: () => GlobalOptions): void {
  const audit = program.command("audit").description("audit the log: the causal tree of one trace, or what a principal or an agent did");
  audit
    .command("trace <trace>")
    .description("the causal tree of one piece of work: who asked, every hop, decision, model and tool call, hold and human decision, with times and the checkpoints that sign it")
    .option("--json", "print the tree as JSON")
    .option("--html <file>", "also write a self-contained HTML report to FILE")
    .option("--scan", "read the whole log instead of the log index (<data>/index)")
    .action(async (trace: string, opts: { json?: boolean; html?: string; scan?: boolean }) => {
      try {
        await traceCommand(globals(), trace, opts);
      } catch (err) {
        fail(err);
      }
    });
  for (const kind of ["principal", "agent"] as const) {
    audit
      .command(`${kind} <name>`)
      .description(
        kind === "principal"
          ? "what was done on a principal's behalf: messages, denials, holds, model calls with tokens and money, tool calls by outcome, traces"
          : "what an agent did and received: messages, denials, holds, model calls with tokens and money, tool calls by outcome, traces",
      )
      .option("--since <seqOrTime>", "only from this log sequence or ISO time on")
      .option("--json", "print the summary as JSON")
      .option("--scan", "read the whole log instead of the log index (<data>/index)")
      .action(async (name: string, opts: { since?: string; json?: boolean; scan?: boolean }) => {
        try {
          const since = opts.since !== undefined ? parseSince(opts.since) : undefined;
          await summaryCommand(globals(), { kind, name }, since, opts);
        } catch (err) {
          fail(err);
        }
      });
  }
}

async function traceCommand(g: GlobalOptions, trace: string, opts: { json?: boolean; html?: string; scan?: boolean }): Promise<void> {
  const ctx = cliContext(g);
  const prefix = trace.toLowerCase();
  const source = await ctx.openLog("audit");
  let evidence: TraceEvidence;
  try {
    evidence = opts.scan ? await scanTrace(source, prefix) : await indexedTrace(ctx.layout.index, source, prefix);
  } finally {
    await source.close();
  }
  const audit = auditTrace(evidence);
  if (opts.html) writeFileSync(opts.html, renderTraceHtml(audit, Date.now()));
  if (opts.json) process.stdout.write(JSON.stringify(audit, binSafe, 2) + "\n");
  else process.stdout.write(formatTrace(audit) + (opts.html ? `HTML report written to ${opts.html}\n` : ""));
}

/** The trace's evidence from a full read of the log. */
async function scanTrace(source: LogSource, prefix: string): Promise<TraceEvidence> {
  const collector = new TraceCollector(prefix, verifySignature);
  for await (const entry of source.entries({ from: 1, follow: false })) collector.add(entry);
  return collector.result();
}

/** The trace's evidence through the log index: its own entries and the few that sign them. */
async function indexedTrace(path: string, source: LogSource, prefix: string): Promise<TraceEvidence> {
  let index: LogIndex;
  try {
    index = LogIndex.open(path);
  } catch (err) {
    process.stderr.write(`warning: ${(err as Error).message}; reading the whole log\n`);
    return scanTrace(source, prefix);
  }
  try {
    await index.catchUp(source);
    return await indexedTraceEvidence(index, source, prefix, verifySignature);
  } finally {
    await index.close();
  }
}

async function summaryCommand(g: GlobalOptions, subject: SummarySubject, since: Since | undefined, opts: { json?: boolean; scan?: boolean }): Promise<void> {
  const ctx = cliContext(g);
  const source = await ctx.openLog("audit");
  let read: IndexedActivity;
  try {
    // A name the index cannot hold (empty, or longer than any key) is looked for in the whole log.
    read = opts.scan || !isIndexableName(subject.name) ? await scanActivity(source, subject, since) : await indexedSummary(ctx.layout.index, source, subject, since);
  } finally {
    await source.close();
  }
  if (opts.json) process.stdout.write(JSON.stringify(read.summary, binSafe, 2) + "\n");
  else process.stdout.write(formatSummary(read.summary));
  if (read.undecodable > 0) process.stderr.write(`warning: ${read.undecodable} log entries could not be decoded; run 'maxwell verify'\n`);
}

/** The summary from a full read of the log. */
async function scanActivity(source: LogSource, subject: SummarySubject, since: Since | undefined): Promise<IndexedActivity> {
  const fold = new ActivityFold(subject, since);
  let undecodable = 0;
  for await (const entry of source.entries({ from: 1, follow: false })) {
    let event: LogEvent;
    try {
      event = decodeMap(entry.data) as unknown as LogEvent;
    } catch {
      undecodable += 1;
      continue;
    }
    fold.add(event);
  }
  return { summary: fold.result(), undecodable };
}

/** The summary through the log index: only the entries about the subject. */
async function indexedSummary(path: string, source: LogSource, subject: SummarySubject, since: Since | undefined): Promise<IndexedActivity> {
  let index: LogIndex;
  try {
    index = LogIndex.open(path);
  } catch (err) {
    process.stderr.write(`warning: ${(err as Error).message}; reading the whole log\n`);
    return scanActivity(source, subject, since);
  }
  try {
    await index.catchUp(source);
    return await indexedActivity(index, source, subject, since);
  } finally {
    await index.close();
  }
}

/** Binary values in event bodies (msgpack bin) as base64, not as objects of byte indexes. */
function binSafe(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? { base64: Buffer.from(value).toString("base64") } : value;
}
