/**
 * The append path under failure, against an in-memory stream with JetStream's rules (expected
 * last sequence, msg-id dedupe): pipelined appends stay one gap-free chain in order, a failed
 * publish is re-chained, an entry whose ack was lost is recognized and not written twice, and a
 * duplicate msg id is answered with the entry already stored.
 */
import { describe, expect, it } from "vitest";
import { ChainVerifier, EVENT_VERSION, EventType, GENESIS_PREV, decodeMap, newEventId, type LogEvent, type StoredEntry } from "../../src/protocol/mod.js";
import type { LogPublisher, PubAck } from "../../src/transport/connection.js";
import { Appender } from "../../services/kernel/appender.js";

/** A stream that follows JetStream's publish rules; `fault(n)` decides the fate of the n-th publish. */
function memoryStream(fault: (n: number) => "ok" | "lost" | "stored-ack-lost" = () => "ok") {
  const entries: StoredEntry[] = [];
  const ids = new Map<string, number>();
  let publishes = 0;
  const publisher: LogPublisher = {
    publish(subject, data, opts, done) {
      const n = ++publishes;
      setImmediate(() => {
        const fate = fault(n);
        if (fate === "lost") return done(new Error("timeout"));
        const existing = ids.get(opts.msgId);
        if (existing !== undefined) return done({ seq: existing, duplicate: true } satisfies PubAck);
        if (opts.expectedLastSeq !== entries.length) return done(new Error("wrong last sequence"));
        entries.push({ seq: entries.length + 1, subject, data });
        ids.set(opts.msgId, entries.length);
        if (fate === "stored-ack-lost") return done(new Error("timeout"));
        done({ seq: entries.length, duplicate: false });
      });
    },
    close() {},
  };
  return {
    entries,
    publisher,
    readTail: async () => ({ lastSeq: entries.length, ...(entries.length > 0 ? { last: entries[entries.length - 1] as StoredEntry } : {}) }),
    readRange: async (from: number, to: number) => entries.slice(from - 1, to),
  };
}

function appender(stream: ReturnType<typeof memoryStream>, stored: LogEvent[]) {
  return new Appender({
    publish: stream.publisher,
    readTail: stream.readTail,
    readRange: stream.readRange,
    head: { seq: 0, hash: GENESIS_PREV },
    onStored: (event) => void stored.push(event),
    maxInFlight: 64,
  });
}

function record(i: number) {
  const id = newEventId();
  return { msgId: `a:s.${i}:0`, build: () => ({ v: EVENT_VERSION, id, at: i, type: EventType.Genesis, kernelKey: `k${i}` }) as never };
}

function verify(entries: StoredEntry[]) {
  const v = new ChainVerifier(undefined, () => true);
  for (const e of entries) v.add(e);
  return v.finish(entries.length);
}

async function appendAll(a: Appender, n: number): Promise<LogEvent[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => {
    const r = record(i);
    return a.append("mx.log.k.genesis", r.msgId, r.build);
  }));
}

describe("appender", () => {
  it("keeps pipelined appends one gap-free chain, completed in log order", async () => {
    const stream = memoryStream();
    const stored: LogEvent[] = [];
    const results = await appendAll(appender(stream, stored), 200);
    expect(stream.entries).toHaveLength(200);
    expect(verify(stream.entries).ok).toBe(true);
    expect(stored.map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(results.map((e) => e.seq)).toEqual(stored.map((e) => e.seq));
  });

  it("re-chains after a publish is lost mid-pipeline: every event stored exactly once, chain intact", async () => {
    const stream = memoryStream((n) => (n === 10 ? "lost" : "ok"));
    const stored: LogEvent[] = [];
    await appendAll(appender(stream, stored), 100);
    expect(stream.entries).toHaveLength(100);
    expect(verify(stream.entries).ok).toBe(true);
    const kinds = stream.entries.map((e) => decodeMap(e.data)["kernelKey"]);
    expect(new Set(kinds).size).toBe(100);
    expect(stored.map((e) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });

  it("recognizes an event stored whose ack was lost, and does not write it again", async () => {
    const stream = memoryStream((n) => (n === 5 ? "stored-ack-lost" : "ok"));
    const stored: LogEvent[] = [];
    await appendAll(appender(stream, stored), 50);
    expect(stream.entries).toHaveLength(50);
    expect(verify(stream.entries).ok).toBe(true);
    expect(stored).toHaveLength(50);
  });

  it("answers a duplicate msg id with the entry already stored, without a new entry", async () => {
    const stream = memoryStream();
    const stored: LogEvent[] = [];
    const a = appender(stream, stored);
    const r = record(1);
    const first = await a.append("mx.log.k.genesis", r.msgId, r.build);
    const again = await a.append("mx.log.k.genesis", r.msgId, record(2).build);
    expect(stream.entries).toHaveLength(1);
    expect(again.id).toBe(first.id);
    expect(again.seq).toBe(1);
    const after = await a.append("mx.log.k.genesis", "a:other:0", record(3).build);
    expect(after.seq).toBe(2);
    expect(verify(stream.entries).ok).toBe(true);
  });
});
