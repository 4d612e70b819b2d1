/**
 * Audit of one trace in a long log (issue 6, item 6): the log index against logs of 100k and 1M
 * events. Each log is written straight into the JetStream log stream of a real nats-server (in
 * its own temp data dir), chained as the kernel chains it (`seq`, `prev` = hash of the entry
 * before), with the event shapes the kernel writes: a genesis event naming a fresh kernel key,
 * short pieces of work (a message, a model call and its outcome, a reply) as background, a few
 * thousand longer traces (20-50 events: requests, model and tool calls, holds and the human
 * decisions on them) scattered through it, and a checkpoint every 1,000 events signed by the
 * genesis key (so the audited checkpoints verify, as in a real log).
 *
 * Measures: index build rate (events/s, reading the log from the stream as `maxwell audit` does
 * with no daemon) and its size on disk; then the audit of one trace end to end as the CLI does it
 * minus process start and the NATS connection: open the index, catch up (check the watermark's
 * hash, nothing new to read), find the trace, fetch its entries and the checkpoints that sign
 * them by sequence (direct gets), build the tree and the text (p50 over 20 traces). Target: at
 * most 200 ms on the 1M-event log, and no growth from 100k to 1M. On the 100k log the indexed
 * audit is also checked against a full scan, whose time is reported for comparison.
 *
 * Alone: `node --import tsx bench/trace-index.ts [events...]` (default 100000 1000000).
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createServer } from "@nats-io/nkeys";
import { EVENT_VERSION, EventType, GENESIS_PREV, LOG_STREAM, checkpointMessage, encode, entryHash, newEventId, newTraceId, subjects } from "../src/protocol/mod.js";
import { TraceCollector, auditTrace, formatTrace } from "../src/runtime/audit.js";
import { startEmbedded } from "../src/runtime/deployment.js";
import { LogIndex, indexedTraceEvidence, type LogReader } from "../src/runtime/log-index.js";
import { connectNats, ensureLogStream, jetstream, jetstreamManager, readEntriesAt, readLog, type JetStreamManager, type NatsConnection } from "../src/transport/connection.js";
import { sign, verifySignature } from "../src/transport/identity.js";
import { summarize, type Latency } from "./stats.js";

/** One log size's figures. */
export interface TraceIndexRun {
  events: number;
  /** Long traces in the log, and their events (the rest is short background work). */
  traces: number;
  traceEvents: number;
  /** Writing the log into the stream (not part of what is measured; shown for the record). */
  writePerSec: number;
  indexMs: number;
  indexPerSec: number;
  /** Bytes the index's files take on disk. */
  indexBytes: number;
  /** Audit of one trace through the index, end to end minus process start. */
  audit: Latency;
  /** Of which: finding and fetching its entries (direct gets; nats-server reads cold message blocks from disk). */
  auditFetch: Latency;
  /** The same audit right after (the server's message blocks it reads are cached). */
  auditAgain: Latency;
  /** Entries fetched per audit (median): the trace's, its checkpoints', genesis. */
  fetchedPerAudit: number;
  eventsPerAuditedTrace: number;
  /** The indexed audit equals a full scan's (checked on the smaller log only). */
  equalsScan?: boolean;
  /** The same audit by reading the whole log (smaller log only). */
  scanMs?: number;
}

export interface TraceIndexResults {
  runs: TraceIndexRun[];
  targetMs: number;
  pass: boolean;
}

const TARGET_MS = 200;
const AUDITS = 20;
const FLUSH_EVERY = 2048;
const CHECKPOINT_EVERY = 1000;
const DECISION = { effect: "allow", policies: ["agents-use-models", "principal:principals-allow-models"], policySet: "8c2ca80e17e6".padEnd(64, "0") };

/** Positions of the long traces' events: each trace lives in a window of 10k-50k events. */
function schedule(events: number, traces: number, rand: () => number): Array<{ at: number; trace: number; step: number }> {
  const out: Array<{ at: number; trace: number; step: number }> = [];
  for (let t = 0; t < traces; t++) {
    const length = 20 + Math.floor(rand() * 31);
    const window = Math.min(events - 2, 10_000 + Math.floor(rand() * 40_000));
    const start = 2 + Math.floor(rand() * (events - 2 - window));
    const at = Array.from({ length }, () => start + Math.floor(rand() * window)).sort((a, b) => a - b);
    at.forEach((p, step) => out.push({ at: p, trace: t, step }));
  }
  return out.sort((a, b) => a.at - b.at);
}

/** A small seeded generator: the same log for the same size. */
function mulberry(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes a chained log of `total` events into the stream; returns the long traces' ids. */
async function writeLog(nc: NatsConnection, jsm: JetStreamManager, total: number, say: (line: string) => void): Promise<{ traces: string[]; traceEvents: number; ms: number }> {
  const rand = mulberry(total);
  const kernel = createServer();
  // nkeys derives the public key from the seed on every call (pure JS): once is enough.
  const kernelKey = kernel.getPublicKey();
  const traceCount = Math.max(20, Math.round(total / 330));
  const plan = schedule(total, traceCount, rand);
  const traces = Array.from({ length: traceCount }, () => newTraceId() as string);
  /** Per long trace: its root message id and its last open hold. */
  const roots = new Map<number, string>();
  const holds = new Map<number, string>();
  let seq = 0;
  let head = GENESIS_PREV;
  let next = 0;
  let background: { trace: string; root: string; step: number } | undefined;
  const t0 = performance.now();

  const publish = async (subject: string, body: Record<string, unknown>): Promise<string> => {
    seq += 1;
    const id = newEventId();
    const data = encode({ v: EVENT_VERSION, seq, prev: head, id, at: 1_760_000_000_000 + seq, ...body });
    head = entryHash(subject, data);
    // Core publishes into the stream's subjects, in order on one connection: JetStream stores them
    // at consecutive sequences. A flush every FLUSH_EVERY bounds what is in flight; the stream's
    // last sequence is checked at the end.
    nc.publish(subject, data);
    if (seq % FLUSH_EVERY === 0) await nc.flush();
    return id;
  };
  const caused = (actor: string, trace: string, causation: string | undefined, step: number) => ({
    actor,
    principal: "alice",
    syscall: `${causation ?? newEventId()}:${step}`,
    trace,
    depth: causation ? 1 : 0,
    ...(causation ? { causation } : {}),
  });

  /** One event of a long trace: a request, then model and tool calls, holds and their decisions. */
  const longStep = async (t: number, step: number): Promise<void> => {
    const trace = traces[t] as string;
    const agent = `worker-${t % 16}`;
    const root = roots.get(t);
    if (root === undefined) {
      roots.set(t, await publish(subjects.logInbox(agent), { type: EventType.Message, kind: "request", to: agent, body: { task: `job ${t}`, items: [t, step] }, decision: DECISION, deadline: 1_900_000_000_000, ...caused("alice", trace, undefined, 0) }));
      return;
    }
    const hold = holds.get(t);
    if (hold !== undefined) {
      holds.delete(t);
      await publish(subjects.logApproval("carol"), { type: EventType.ApprovalDecided, approval: hold, verdict: "approve", by: "carol", reason: "fine" });
      return;
    }
    const kind = step % 7;
    if (kind === 5) {
      const id = await publish(subjects.logApproval(agent), {
        type: EventType.ApprovalRequested,
        op: "tool",
        request: { id: `${root}:${step}`, to: "db-drop", body: { table: `t${step}` } },
        digest: "ab".repeat(32),
        reason: "destructive tool call",
        decision: { ...DECISION, policies: ["hold-destructive"] },
        labels: [],
        expiresAt: 1_900_000_000_000,
        ...caused(agent, trace, root, step),
      });
      holds.set(t, id);
    } else if (kind % 2 === 1) {
      await publish(subjects.logEffect(agent), { type: EventType.EffectStarted, kind: "llm", op: "complete", target: "maxwell-offline", args: { model: "maxwell-offline", max_tokens: 64, messages: [{ role: "user", content: `step ${step}` }] }, decision: DECISION, labels: [], reserved: { tokens: 64 }, ...caused(agent, trace, root, step) });
    } else {
      await publish(subjects.logEffect(agent), { type: EventType.EffectCompleted, effect: root, kind: "tool", op: "call", target: "lookup", result: { rows: step }, labels: [], ...caused(agent, trace, root, step) });
    }
  };

  /** Background: short pieces of work of four events each, one trace apiece. */
  const backgroundStep = async (): Promise<void> => {
    if (!background || background.step === 4) background = { trace: newTraceId(), root: "", step: 0 };
    const b = background;
    const agent = `agent-${Math.floor(rand() * 64)}`;
    switch (b.step++) {
      case 0:
        b.root = await publish(subjects.logInbox(agent), { type: EventType.Message, kind: "send", to: agent, body: { note: "background work", n: seq }, decision: DECISION, ...caused("bob", b.trace, undefined, 0) });
        break;
      case 1:
        await publish(subjects.logEffect(agent), { type: EventType.EffectStarted, kind: "llm", op: "complete", target: "maxwell-offline", args: { model: "maxwell-offline", max_tokens: 32, messages: [{ role: "user", content: "hi" }] }, decision: DECISION, labels: [], ...caused(agent, b.trace, b.root, 0) });
        break;
      case 2:
        await publish(subjects.logEffect(agent), { type: EventType.EffectCompleted, effect: b.root, kind: "llm", op: "complete", target: "maxwell-offline", result: { content: [{ type: "text", text: "hello" }] }, labels: [], usage: { model: "maxwell-offline", inputTokens: 5, outputTokens: 7 }, spent: { tokens: 12, microUsd: 30 }, ...caused(agent, b.trace, b.root, 0) });
        break;
      default:
        await publish(subjects.logRecord(agent), { type: EventType.Record, observed: [{ kind: "now", value: 1_760_000_000_000 + seq }], ...caused(agent, b.trace, b.root, 1) });
    }
  };

  await publish(subjects.logKernel("genesis"), { type: EventType.Genesis, kernelKey });
  let traceEvents = 0;
  let lastSay = performance.now();
  while (seq < total) {
    if ((seq + 1) % CHECKPOINT_EVERY === 0) {
      const upTo = seq;
      await publish(subjects.logKernel("checkpoint"), { type: EventType.Checkpoint, upTo, head, key: kernelKey, sig: sign(kernel, checkpointMessage(upTo, head)) });
    } else if (next < plan.length && (plan[next] as { at: number }).at <= seq + 1) {
      const p = plan[next++] as { trace: number; step: number };
      await longStep(p.trace, p.step);
      traceEvents += 1;
    } else {
      await backgroundStep();
    }
    if (performance.now() - lastSay > 5000) {
      say(`  wrote ${seq.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} events`);
      lastSay = performance.now();
    }
  }
  await nc.flush();
  for (const until = Date.now() + 30_000; ; ) {
    const stored = (await jsm.streams.info(LOG_STREAM)).state.last_seq;
    if (stored === total) break;
    if (stored > total || Date.now() > until) throw new Error(`the stream holds ${stored} entries, not the ${total} written`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { traces, traceEvents, ms: performance.now() - t0 };
}

function bytesOnDisk(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).blocks * 512, 0);
}

async function measureOne(total: number, say: (line: string) => void): Promise<TraceIndexRun> {
  const dir = mkdtempSync(join(tmpdir(), "maxwell-bench-index-"));
  const embedded = await startEmbedded({ dataDir: dir });
  const nc = await connectNats({ servers: embedded.server.url, creds: embedded.layout.credsOf("kernel"), name: "bench-trace-index" });
  try {
    const jsm = await jetstreamManager(nc);
    await ensureLogStream(jsm);
    const js = jetstream(nc);
    say(`trace index: writing a chained log of ${total.toLocaleString("en-US")} events`);
    const written = await writeLog(nc, jsm, total, say);
    let fetched = 0;
    const reader: LogReader = {
      entries: ({ from }) => readLog(js, jsm, { fromSeq: from }),
      async entriesAt(seqs) {
        const found = await readEntriesAt(jsm, seqs);
        fetched += found.length;
        return found;
      },
    };
    say(`trace index: indexing it`);
    const indexDir = embedded.layout.index;
    const t0 = performance.now();
    const built = LogIndex.open(indexDir);
    const r = await built.catchUp(reader);
    await built.close();
    const indexMs = performance.now() - t0;
    if (r.indexed !== total) throw new Error(`indexed ${r.indexed} of ${total} entries`);

    const rand = mulberry(7);
    const picked = Array.from({ length: AUDITS }, () => written.traces[Math.floor(rand() * written.traces.length)] as string);
    /** One audit as the CLI does it (minus process start and connecting), timed by phase. */
    const auditOnce = async (trace: string): Promise<{ ms: number; fetchMs: number; fetched: number; events: number; text: string }> => {
      fetched = 0;
      const t1 = performance.now();
      const index = LogIndex.open(indexDir);
      try {
        await index.catchUp(reader);
        const t2 = performance.now();
        const evidence = await indexedTraceEvidence(index, reader, trace.slice(0, 12), verifySignature);
        const fetchMs = performance.now() - t2;
        const audit = auditTrace(evidence);
        const text = formatTrace(audit);
        if (!audit.checkpoints.every((c) => c.verified)) throw new Error(`a checkpoint of trace ${trace} does not verify`);
        await index.close();
        return { ms: performance.now() - t1, fetchMs, fetched, events: audit.events, text };
      } catch (err) {
        await index.close();
        throw err;
      }
    };
    // The first audit warms the process up (module code, LMDB pages): not counted.
    let text = (await auditOnce(picked[0] as string)).text;
    const first: Array<Awaited<ReturnType<typeof auditOnce>>> = [];
    const again: Array<Awaited<ReturnType<typeof auditOnce>>> = [];
    for (const trace of picked) {
      first.push(await auditOnce(trace));
      again.push(await auditOnce(trace));
      text = (first.at(-1) as { text: string }).text;
    }
    const run: TraceIndexRun = {
      events: total,
      traces: written.traces.length,
      traceEvents: written.traceEvents,
      writePerSec: (total * 1000) / written.ms,
      indexMs,
      indexPerSec: (total * 1000) / indexMs,
      indexBytes: bytesOnDisk(indexDir),
      audit: summarize(first.map((a) => a.ms)),
      auditFetch: summarize(first.map((a) => a.fetchMs)),
      auditAgain: summarize(again.map((a) => a.ms)),
      fetchedPerAudit: summarize(first.map((a) => a.fetched)).p50,
      eventsPerAuditedTrace: summarize(first.map((a) => a.events)).p50,
    };
    if (total <= 200_000) {
      const trace = picked[0] as string;
      const t2 = performance.now();
      const collector = new TraceCollector(trace, verifySignature);
      for await (const e of readLog(js, jsm, { fromSeq: 1 })) collector.add(e);
      const scanned = formatTrace(auditTrace(collector.result()));
      run.scanMs = performance.now() - t2;
      const index = LogIndex.open(indexDir);
      try {
        run.equalsScan = formatTrace(auditTrace(await indexedTraceEvidence(index, reader, trace, verifySignature))) === scanned;
      } finally {
        await index.close();
      }
    }
    say(`trace index: ${total.toLocaleString("en-US")} events indexed at ${Math.round(run.indexPerSec).toLocaleString("en-US")}/s; audit p50 ${run.audit.p50.toFixed(1)} ms (fetch ${run.auditFetch.p50.toFixed(1)}), again ${run.auditAgain.p50.toFixed(1)} ms (${text.split("\n")[1] ?? ""})`);
    return run;
  } finally {
    await nc.close();
    await embedded.server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Builds each log, indexes it and audits traces in it. */
export async function measureTraceIndex(say: (line: string) => void = () => undefined, sizes: readonly number[] = [100_000, 1_000_000]): Promise<TraceIndexResults> {
  const runs: TraceIndexRun[] = [];
  for (const total of sizes) runs.push(await measureOne(total, say));
  const largest = runs.reduce((a, b) => (b.events > a.events ? b : a));
  return { runs, targetMs: TARGET_MS, pass: largest.audit.p50 <= TARGET_MS && runs.every((r) => r.equalsScan !== false) };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sizes = process.argv.slice(2).map(Number).filter((n) => Number.isInteger(n) && n > 0);
  const say = (line: string): void => void process.stderr.write(`· ${line}\n`);
  const started = performance.now();
  const results = await measureTraceIndex(say, sizes.length > 0 ? sizes : undefined);
  process.stdout.write(JSON.stringify(results, null, 2) + "\n");
  process.stderr.write(`· ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  process.exit(0);
}
