/**
 * The log index against a real nats-server and a real LMDB in a temp dir: it catches up from its
 * watermark, finds a trace by a unique prefix (and refuses an ambiguous one with the full scan's
 * words), gives the same trace evidence as reading the whole log while fetching only the trace's
 * entries and the checkpoints that sign them, keeps per principal and per agent the entries their
 * summaries read (the same summary as a full read, from the subject's entries only), rebuilds
 * itself when pointed at another log or when it was built in another format, and stays exact when
 * two catch-ups race.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "@nats-io/nkeys";
import { open } from "lmdb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EVENT_VERSION,
  EventType,
  GENESIS_PREV,
  MaxwellError,
  checkpointMessage,
  decodeMap,
  encode,
  entryHash,
  newEventId,
  newTraceId,
  subjects,
  type LogEvent,
  type StoredEntry,
} from "../../src/protocol/mod.js";
import { ActivityFold, TraceCollector, auditTrace, type ActivitySummary, type Since, type SummarySubject, type TraceEvidence } from "../../src/runtime/audit.js";
import { startEmbedded, type EmbeddedServer } from "../../src/runtime/deployment.js";
import { LogIndex, LogIndexFollower, indexedActivity, indexedReplayEntries, indexedTraceEvidence, type LogReader } from "../../src/runtime/log-index.js";
import { connectNats, ensureLogStream, jetstream, jetstreamManager, readEntriesAt, readLog, type JetStreamClient, type JetStreamManager, type NatsConnection } from "../../src/transport/connection.js";
import { sign, verifySignature } from "../../src/transport/identity.js";

/** A log written straight into a stream, chained as the kernel chains it. */
class SyntheticLog {
  seq = 0;
  head = GENESIS_PREV;
  readonly entries: StoredEntry[] = [];
  readonly key = createServer();

  constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {}

  async raw(subject: string, data: Uint8Array): Promise<StoredEntry> {
    const ack = await this.js.publish(subject, data);
    expect(ack.seq).toBe(this.seq + 1);
    this.seq = ack.seq;
    this.head = entryHash(subject, data);
    const entry = { seq: ack.seq, subject, data };
    this.entries.push(entry);
    return entry;
  }

  async event(subject: string, body: Record<string, unknown>): Promise<{ id: string; seq: number }> {
    const id = newEventId();
    const entry = await this.raw(subject, encode({ v: EVENT_VERSION, seq: this.seq + 1, prev: this.head, id, at: 1_700_000_000_000 + this.seq, ...body }));
    return { id, seq: entry.seq };
  }

  genesis(): Promise<{ id: string; seq: number }> {
    return this.event(subjects.logKernel("genesis"), { type: EventType.Genesis, kernelKey: this.key.getPublicKey() });
  }

  checkpoint(): Promise<{ id: string; seq: number }> {
    const upTo = this.seq;
    return this.event(subjects.logKernel("checkpoint"), { type: EventType.Checkpoint, upTo, head: this.head, key: this.key.getPublicKey(), sig: sign(this.key, checkpointMessage(upTo, this.head)) });
  }

  /** One piece of work: alice → agent (a request), a tool call held and decided, the reply. */
  async work(trace: string, agent: string, opts: { decide?: boolean } = {}): Promise<void> {
    const decision = { effect: "allow", policies: ["p"], policySet: "s".repeat(64) };
    const caused = (actor: string, causation?: string) => ({ actor, principal: "alice", syscall: `${newEventId()}:0`, trace, depth: causation ? 1 : 0, ...(causation ? { causation } : {}) });
    const req = await this.event(subjects.logInbox(agent), { type: EventType.Message, kind: "request", to: agent, body: { q: trace }, decision, ...caused("alice") });
    const hold = await this.event(subjects.logApproval(agent), {
      type: EventType.ApprovalRequested,
      op: "tool",
      request: { id: "x:0", to: "db-drop", body: {} },
      digest: "d",
      reason: "destructive",
      decision,
      labels: [],
      expiresAt: 1_800_000_000_000,
      ...caused(agent, req.id),
    });
    if (opts.decide) await this.event(subjects.logApproval("carol"), { type: EventType.ApprovalDecided, approval: hold.id, verdict: "approve", by: "carol" });
    await this.event(subjects.logReplies("alice"), { type: EventType.Reply, to: "alice", inReplyTo: req.id, body: { a: 1 }, decision, ...caused(agent, req.id) });
  }
}

interface CountingReader extends LogReader {
  /** Entries handed out by `entries` (a scan) and by `entriesAt` (fetches). */
  scanned: number;
  fetched: number;
  scans: number[];
}

function reader(js: JetStreamClient, jsm: JetStreamManager): CountingReader {
  const r: CountingReader = {
    scanned: 0,
    fetched: 0,
    scans: [],
    async *entries({ from }) {
      r.scans.push(from);
      for await (const e of readLog(js, jsm, { fromSeq: from })) {
        r.scanned += 1;
        yield e;
      }
    },
    async entriesAt(seqs) {
      const found = await readEntriesAt(jsm, seqs);
      r.fetched += found.length;
      return found;
    },
  };
  return r;
}

async function fullScan(log: SyntheticLog, prefix: string): Promise<TraceEvidence> {
  const collector = new TraceCollector(prefix, verifySignature);
  for await (const e of readLog(log.js, log.jsm, { fromSeq: 1 })) collector.add(e);
  return collector.result();
}

/**
 * A full read's summary of `subject`, and the sequences of the events it counted (those that
 * raised its event count): with no `since`, what the subject's postings must be.
 */
async function fullActivity(log: SyntheticLog, subject: SummarySubject, since?: Since): Promise<{ summary: ActivitySummary; counted: number[] }> {
  const fold = new ActivityFold(subject, since);
  const counted: number[] = [];
  for await (const entry of readLog(log.js, log.jsm, { fromSeq: 1 })) {
    let event: LogEvent;
    try {
      event = decodeMap(entry.data) as unknown as LogEvent;
    } catch {
      continue;
    }
    const before = fold.result().tally.events;
    fold.add(event);
    if (fold.result().tally.events > before) counted.push(entry.seq);
  }
  return { summary: fold.result(), counted };
}

async function startLog(dir: string): Promise<{ embedded: EmbeddedServer; log: SyntheticLog }> {
  const embedded = await startEmbedded({ dataDir: dir });
  const nc = await connectNats({ servers: embedded.server.url, creds: embedded.layout.credsOf("kernel"), name: "log-index-test" });
  const jsm = await jetstreamManager(nc);
  await ensureLogStream(jsm);
  return { embedded, log: new SyntheticLog(nc, jetstream(nc), jsm) };
}

describe("log index", () => {
  let dir: string;
  let a: { embedded: EmbeddedServer; log: SyntheticLog };
  let b: { embedded: EmbeddedServer; log: SyntheticLog } | undefined;
  const traces: string[] = [];
  let undecodableSeq = 0;
  let rejectedSeq = 0;
  const indexDir = () => join(dir, "index");

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-log-index-"));
    a = await startLog(join(dir, "a"));
    const log = a.log;
    await log.genesis();
    // Two traces that share a prefix, and others interleaved with them.
    const shared = newTraceId().slice(0, 6);
    traces.push(shared + newTraceId().slice(6), shared + newTraceId().slice(6));
    for (let i = 0; i < 4; i++) traces.push(newTraceId());
    for (let round = 0; round < 3; round++) {
      for (const [i, t] of traces.entries()) await log.work(t, `agent-${i % 2}`, { decide: round === 1 });
      if (round === 0) undecodableSeq = (await log.raw(subjects.logRecord("agent-0"), new Uint8Array([0xc1, 0x00]))).seq;
      if (round === 1) rejectedSeq = (await log.event(subjects.logRejectedUnknown(), { type: EventType.Rejected, actor: "agent-1", subject: "mx.sys.agent-1.send", size: 3, error: { code: "bad_request", message: "no" } })).seq;
      await log.checkpoint();
    }
  });

  afterAll(async () => {
    for (const s of [a, b]) {
      await s?.log.nc.close();
      await s?.embedded.server.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("catches up from nothing to the log's end, with a watermark naming the last entry's hash", async () => {
    const index = LogIndex.open(indexDir());
    try {
      const r = reader(a.log.js, a.log.jsm);
      const result = await index.catchUp(r);
      expect(result).toMatchObject({ indexed: a.log.seq, rebuilt: false });
      expect(index.watermark()).toEqual({ seq: a.log.seq, hash: a.log.head });
      expect(r.scans).toEqual([1]);
      expect(index.undecodable()).toEqual([undecodableSeq]);
      expect(index.rejectedOf("agent-1")).toEqual([rejectedSeq]);
      expect(index.mentions("agent-0")).toBe(true);
      expect(index.mentions("nobody")).toBe(false);
      expect(index.keyEventSeqs()).toEqual([1]);
      expect([...index.checkpointsAfter(0)].map((c) => c.upTo)).toEqual(
        a.log.entries.filter((e) => e.subject === subjects.logKernel("checkpoint")).map((e) => e.seq - 1),
      );
    } finally {
      await index.close();
    }
  });

  it("maps each trace to its events and the decisions on its holds, in log order", async () => {
    const index = LogIndex.open(indexDir());
    try {
      for (const t of traces) {
        const evidence = await fullScan(a.log, t);
        expect(index.seqsOf(t)).toEqual(evidence.events.map((e) => e.seq));
        // Three rounds of four events, one of them with a human decision.
        expect(index.seqsOf(t)).toHaveLength(3 * 3 + 1);
      }
    } finally {
      await index.close();
    }
  });

  it("gives the same trace evidence and audit as a full scan, fetching only the trace's entries and what signs them", async () => {
    const index = LogIndex.open(indexDir());
    try {
      for (const t of traces) {
        const r = reader(a.log.js, a.log.jsm);
        await index.catchUp(r);
        expect(r.scanned).toBe(0);
        const before = r.fetched;
        const indexed = await indexedTraceEvidence(index, r, t.slice(0, 10), verifySignature);
        const scanned = await fullScan(a.log, t.slice(0, 10));
        expect(auditTrace(indexed)).toEqual(auditTrace(scanned));
        expect(indexed.kernelKey).toBe(a.log.key.getPublicKey());
        expect(indexed.undecodable).toEqual([undecodableSeq]);
        // Its 10 events, 3 checkpoints and the entries they sign, genesis, the undecodable entry.
        expect(r.fetched - before).toBeLessThanOrEqual(10 + 3 * 2 + 2);
        expect(auditTrace(indexed).checkpoints.every((c) => c.verified)).toBe(true);
      }
    } finally {
      await index.close();
    }
  });

  it("keeps per principal and per agent the entries a full read's summary counts, and gives the same summary from them", async () => {
    const index = LogIndex.open(indexDir());
    try {
      const r = reader(a.log.js, a.log.jsm);
      await index.catchUp(r);
      const events = a.log.entries.flatMap((e) => {
        try {
          return [decodeMap(e.data) as unknown as LogEvent];
        } catch {
          return [];
        }
      });
      // A decision made after its hold: from there on, the hold itself is before --since.
      const decision = events.find((e) => e.type === EventType.ApprovalDecided) as LogEvent;
      const subjectsToCheck: SummarySubject[] = [
        { kind: "principal", name: "alice" },
        { kind: "principal", name: "carol" },
        { kind: "principal", name: "agent-0" },
        { kind: "agent", name: "agent-0" },
        { kind: "agent", name: "agent-1" },
        { kind: "agent", name: "alice" },
        { kind: "agent", name: "nobody" },
      ];
      for (const subject of subjectsToCheck) {
        const full = await fullActivity(a.log, subject);
        expect(index.activityOf(subject), `${subject.kind} ${subject.name}`).toEqual(full.counted);
        for (const since of [undefined, { seq: decision.seq }, { seq: a.log.seq + 1 }, { at: decision.at }] as Array<Since | undefined>) {
          const before = r.fetched;
          const indexed = await indexedActivity(index, r, subject, since);
          const expected = await fullActivity(a.log, subject, since);
          expect(indexed.summary, `${subject.kind} ${subject.name} since ${JSON.stringify(since)}`).toEqual(expected.summary);
          expect(indexed.undecodable).toBe(1);
          // Only the subject's entries (with --since SEQ, the holds of its decisions may come before SEQ).
          expect(r.fetched - before).toBeLessThanOrEqual(full.counted.length);
        }
      }
      expect(index.activityOf({ kind: "agent", name: "nobody" })).toEqual([]);
      // The checks above must not pass vacuously: decisions on holds made before --since count.
      const hold = events.find((e) => e.type === EventType.ApprovalRequested && decision.type === EventType.ApprovalDecided && e.id === decision.approval) as Extract<LogEvent, { type: "approval.requested" }>;
      expect(hold.seq).toBeLessThan(decision.seq);
      expect(index.activityOf({ kind: "agent", name: hold.actor }, decision.seq)[0]).toBe(hold.seq);
      expect(index.activityOf({ kind: "principal", name: "carol" }, decision.seq)[0]).toBe(decision.seq);
      const fromDecision = await indexedActivity(index, r, { kind: "agent", name: hold.actor }, { seq: decision.seq });
      expect(fromDecision.summary.tally.holds.approved).toBeGreaterThan(0);
      // One decision per trace (round two), all by carol.
      expect((await indexedActivity(index, r, { kind: "principal", name: "carol" })).summary.decided).toEqual({ approved: traces.length, refused: 0 });
      expect((await indexedActivity(index, r, { kind: "agent", name: "agent-1" })).summary.received).toEqual({ send: 0, request: 3 * (traces.length / 2), reply: 0 });
    } finally {
      await index.close();
    }
  });

  it("resolves a unique prefix, and refuses an ambiguous or unknown one with the full scan's words", async () => {
    const index = LogIndex.open(indexDir());
    try {
      const [t0, t1] = traces as [string, string];
      expect(index.resolveTrace(t1.slice(0, 12))).toBe(t1);
      let shared = 0;
      while (t0[shared] === t1[shared]) shared++;
      const prefix = t0.slice(0, shared);
      const scanError = await fullScan(a.log, prefix).catch((err: unknown) => err as MaxwellError);
      expect(() => index.resolveTrace(prefix)).toThrow(MaxwellError);
      try {
        index.resolveTrace(prefix);
      } catch (err) {
        expect((err as MaxwellError).code).toBe("bad_request");
        expect((err as MaxwellError).message).toBe((scanError as MaxwellError).message);
      }
      expect(index.tracesMatching(prefix)).toEqual([t0, t1]);
      const unknown = "f".repeat(31) + "e";
      const scanMissing = await fullScan(a.log, unknown).catch((err: unknown) => err as MaxwellError);
      expect(() => index.resolveTrace(unknown)).toThrow((scanMissing as MaxwellError).message);
      expect(index.tracesMatching("")).toHaveLength(traces.length);
    } finally {
      await index.close();
    }
  });

  it("indexes only what was appended since its watermark", async () => {
    const index = LogIndex.open(indexDir());
    try {
      const before = a.log.seq;
      const fresh = newTraceId();
      await a.log.work(fresh, "agent-0", { decide: true });
      const r = reader(a.log.js, a.log.jsm);
      const result = await index.catchUp(r);
      expect(result.indexed).toBe(a.log.seq - before);
      expect(r.scans).toEqual([before + 1]);
      expect(r.scanned).toBe(a.log.seq - before);
      expect(index.watermark()).toEqual({ seq: a.log.seq, hash: a.log.head });
      expect(index.seqsOf(fresh)).toEqual([before + 1, before + 2, before + 3, before + 4]);
      const replay = await indexedReplayEntries(index, r, "agent-1", fresh.slice(0, 8));
      expect(replay.map((e) => e.seq)).toEqual([rejectedSeq, before + 1, before + 2, before + 3, before + 4]);
      // The new work's postings: a request to agent-0, its hold, carol's decision, its reply.
      expect(index.activityOf({ kind: "agent", name: "agent-0" }, before + 1)).toEqual([before + 1, before + 2, before + 3, before + 4]);
      expect(index.activityOf({ kind: "principal", name: "alice" }, before + 1)).toEqual([before + 1, before + 2, before + 3, before + 4]);
      expect(index.activityOf({ kind: "principal", name: "carol" }, before + 1)).toEqual([before + 3]);
      expect(index.holdOfDecision(before + 3)).toBe(before + 2);
      expect(index.activityOf({ kind: "agent", name: "agent-0" })).toEqual((await fullActivity(a.log, { kind: "agent", name: "agent-0" })).counted);
    } finally {
      await index.close();
    }
  });

  it("does not add an entry twice when catch-ups race", async () => {
    for (let i = 0; i < 5; i++) await a.log.work(newTraceId(), "agent-1");
    const fresh = newTraceId();
    for (let i = 0; i < 3; i++) await a.log.work(fresh, "agent-0");
    const one = LogIndex.open(indexDir());
    const two = LogIndex.open(indexDir());
    try {
      const from = (one.watermark()?.seq ?? 0) + 1;
      const results = await Promise.all([one.catchUp(reader(a.log.js, a.log.jsm)), two.catchUp(reader(a.log.js, a.log.jsm)), one.catchUp(reader(a.log.js, a.log.jsm))]);
      expect(results.reduce((n, r) => n + r.indexed, 0)).toBe(a.log.seq - from + 1);
      expect(one.watermark()).toEqual({ seq: a.log.seq, hash: a.log.head });
      expect(two.seqsOf(fresh)).toHaveLength(9);
      expect(new Set(two.seqsOf(fresh)).size).toBe(9);
    } finally {
      await one.close();
      await two.close();
    }
  });

  it("follows a growing log until stopped (the daemon's follower)", async () => {
    const index = LogIndex.open(indexDir());
    const caughtUp: number[] = [];
    let wake: (() => void) | undefined;
    const follower = new LogIndexFollower(index, reader(a.log.js, a.log.jsm), {
      pollMs: 20,
      onCatchUp: (r) => {
        caughtUp.push(r.watermark?.seq ?? 0);
        wake?.();
      },
    });
    const reached = (seq: number) => new Promise<void>((resolve) => (wake = () => (caughtUp.at(-1) === seq ? resolve() : undefined)));
    const first = reached(a.log.seq);
    follower.start();
    await first;
    const fresh = newTraceId();
    await a.log.work(fresh, "agent-0");
    const second = reached(a.log.seq);
    await second;
    await follower.stop();
    const check = LogIndex.open(indexDir());
    try {
      expect(check.watermark()).toEqual({ seq: a.log.seq, hash: a.log.head });
      expect(check.seqsOf(fresh)).toHaveLength(3);
    } finally {
      await check.close();
    }
  });

  it("drops an index written in an older format and rebuilds it from the start", async () => {
    const raw = open({ path: indexDir(), maxDbs: 16 });
    const meta = raw.openDB<unknown, string>("meta", {});
    await meta.put("format", 1);
    await raw.close();
    const index = LogIndex.open(indexDir());
    try {
      expect(index.watermark()).toBeUndefined();
      expect(index.activityOf({ kind: "principal", name: "alice" })).toEqual([]);
      const r = reader(a.log.js, a.log.jsm);
      expect(await index.catchUp(r)).toMatchObject({ indexed: a.log.seq, rebuilt: false });
      expect(r.scans).toEqual([1]);
      expect(index.activityOf({ kind: "principal", name: "alice" })).toEqual((await fullActivity(a.log, { kind: "principal", name: "alice" })).counted);
    } finally {
      await index.close();
    }
  });

  it("drops and rebuilds itself when the log at its watermark is another log", async () => {
    b = await startLog(join(dir, "b"));
    await b.log.genesis();
    const other = newTraceId();
    await b.log.work(other, "agent-9", { decide: true });
    // Long enough that the old watermark's sequence exists in the new log, with other bytes.
    while (b.log.seq < a.log.seq + 2) await b.log.work(newTraceId(), "agent-9");
    const index = LogIndex.open(indexDir());
    try {
      const r = reader(b.log.js, b.log.jsm);
      const result = await index.catchUp(r);
      expect(result.rebuilt).toBe(true);
      expect(result.indexed).toBe(b.log.seq);
      expect(r.scans).toEqual([1]);
      expect(index.watermark()).toEqual({ seq: b.log.seq, hash: b.log.head });
      expect(index.tracesMatching(traces[0] as string)).toEqual([]);
      expect(index.undecodable()).toEqual([]);
      expect(index.mentions("agent-0")).toBe(false);
      expect(index.seqsOf(other)).toEqual([2, 3, 4, 5]);
      // A log shorter than the watermark is another log too.
      const shorter = await startLog(join(dir, "c"));
      try {
        await shorter.log.genesis();
        const again = await index.catchUp(reader(shorter.log.js, shorter.log.jsm));
        expect(again).toMatchObject({ rebuilt: true, indexed: 1, watermark: { seq: 1, hash: shorter.log.head } });
      } finally {
        await shorter.log.nc.close();
        await shorter.embedded.server.stop();
      }
    } finally {
      await index.close();
    }
  });
});
