/**
 * The store as a projection of the log (services/memory/apply.ts) on real LMDB and real key
 * files: a logged write applies once with the provenance of its event, at the event's time; a
 * refused write (CAS conflict, erased key) is an outcome, not an error; and a store rebuilt from
 * the same events, in batches of any size, has the live store's digest.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode } from "../../src/protocol/errors.js";
import { encode } from "../../src/protocol/codec.js";
import { POSTING_ROW } from "../../services/memory/layout.js";
import {
  CallClock,
  NamespaceKeys,
  applyLogEvent,
  applyLogEvents,
  openMemoryStore,
  parseMemoryArgs,
  rebuildFromLog,
  sealMemoryArgs,
  type MemoryStore,
  type MemoryWriteEvent,
} from "../../services/memory/mod.js";

const T0 = 1_767_225_600_000;
let root: string;
let n = 0;
const stores: MemoryStore[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "maxwell-memory-apply-"));
});
afterAll(async () => {
  for (const s of stores) await s.close();
  rmSync(root, { recursive: true, force: true });
});

function fresh(keysDir = join(root, `k${n++}`)): { store: MemoryStore; keys: NamespaceKeys; clock: CallClock } {
  const clock = new CallClock();
  clock.set(T0);
  const store = openMemoryStore({ path: join(root, `s${n++}`), now: clock.now, noSync: true });
  stores.push(store);
  return { store, keys: new NamespaceKeys(keysDir), clock };
}

/** A logged memory write as the kernel would log it: args parsed, then sealed. */
function logged(keys: NamespaceKeys, seq: number, op: string, target: string, args: unknown, over: Partial<MemoryWriteEvent> = {}): MemoryWriteEvent {
  return {
    type: "effect.started",
    kind: "mem",
    id: `01JEV${String(seq).padStart(21, "0")}`,
    seq,
    at: T0 + seq,
    op,
    target,
    args: sealMemoryArgs(keys, op, target, parseMemoryArgs(op, args)),
    actor: "worker-1",
    principal: "alice",
    labels: [],
    ...over,
  };
}

describe("applying logged memory writes", () => {
  it("writes with the event's provenance, time and labels joined with the args' labels", async () => {
    const { store, keys } = fresh();
    const e = logged(keys, 7, "put", "agent:worker-1", { key: "plan", value: { step: 1 }, labels: ["conf:internal"] }, { labels: ["untrusted"], actor: "worker-1", principal: "bob" });
    const outcome = await applyLogEvent(store, keys, e);
    expect(outcome).toMatchObject({ seq: 7, effect: e.id, ok: true, result: { namespace: "agent:worker-1", key: "plan", version: 1, at: T0 + 7 } });
    expect(store.get("agent:worker-1", "plan")).toMatchObject({
      value: { step: 1 },
      at: T0 + 7,
      provenance: { writer: "worker-1", principal: "bob", causedBy: e.id, labels: ["conf:internal", "untrusted"] },
    });
    expect(store.appliedSeq()).toBe(7);
  });

  it("applies an effect once: the same event again is answered from its recorded outcome", async () => {
    const { store, keys } = fresh();
    const e = logged(keys, 3, "append", "agent:w", { value: "saw a 404" });
    const first = await applyLogEvent(store, keys, e);
    const digest = store.digest({ at: T0 + 10 });
    const again = await applyLogEvent(store, keys, e);
    expect(again).toEqual({ ...first, repeated: true });
    expect(store.digest({ at: T0 + 10 })).toBe(digest);
    expect(store.info("agent:w").revision).toBe(1);
    // Two copies in one commit: still once.
    const e2 = logged(keys, 4, "append", "agent:w", { value: "again" });
    const [a, b] = await applyLogEvents(store, keys, [e2, e2]);
    expect(a?.repeated).toBeUndefined();
    expect(b?.repeated).toBe(true);
    expect(store.info("agent:w").revision).toBe(2);
  });

  it("refuses a different effect at an applied sequence: the store is from another log", async () => {
    const { store, keys } = fresh();
    await applyLogEvent(store, keys, logged(keys, 5, "put", "agent:w", { key: "k", value: 1 }));
    const other = await applyLogEvent(store, keys, logged(keys, 5, "put", "agent:w", { key: "k", value: 2 }, { id: "01JOTHER0000000000000000000" }));
    expect(other?.ok).toBe(false);
    expect(other?.error?.code).toBe(ErrorCode.Conflict);
    expect(other?.error?.message).toMatch(/another log/);
    expect(store.get("agent:w", "k")?.value).toBe(1);
  });

  it("records a compare-and-set conflict as the write's outcome and changes nothing", async () => {
    const { store, keys } = fresh();
    await applyLogEvent(store, keys, logged(keys, 1, "put", "agent:w", { key: "k", value: "v1" }));
    const stale = logged(keys, 2, "put", "agent:w", { key: "k", value: "v2", expectedVersion: 0 });
    const [conflict, next] = await applyLogEvents(store, keys, [stale, logged(keys, 3, "put", "agent:w", { key: "k", value: "v3", expectedVersion: 1 })]);
    expect(conflict).toMatchObject({ ok: false, error: { code: ErrorCode.Conflict } });
    expect(conflict?.error?.message).toMatch(/expected version 0, but it is at version 1/);
    expect(next).toMatchObject({ ok: true, result: { version: 2 } });
    expect(store.get("agent:w", "k")?.value).toBe("v3");
    expect(await applyLogEvent(store, keys, stale)).toMatchObject({ ok: false, repeated: true, error: { code: ErrorCode.Conflict } });
    expect(store.effectOutcome(2)?.error?.code).toBe(ErrorCode.Conflict);
  });

  it("judges TTL at the event's time, never the service's clock", async () => {
    const { store, keys, clock } = fresh();
    await applyLogEvent(store, keys, logged(keys, 1, "put", "agent:w", { key: "k", value: "short", ttlMs: 1000 }, { at: T0 }));
    clock.set(T0 + 999);
    expect(store.get("agent:w", "k")?.expiresAt).toBe(T0 + 1000);
    clock.set(T0 + 1000);
    expect(store.get("agent:w", "k")).toBeUndefined();
    // A CAS at a time the record had expired sees no record, whatever time it is applied at.
    clock.set(T0);
    const cas = await applyLogEvent(store, keys, logged(keys, 2, "put", "agent:w", { key: "k", value: "new", expectedVersion: 0 }, { at: T0 + 1500 }));
    expect(cas).toMatchObject({ ok: true, result: { version: 2 } });
  });

  it("refuses a wrong vector dimension for the namespace as the write's outcome", async () => {
    const { store, keys } = fresh();
    await applyLogEvent(store, keys, logged(keys, 1, "put", "shared:v", { key: "a", value: 1, vector: [1, 0, 0] }));
    const wrong = await applyLogEvent(store, keys, logged(keys, 2, "append", "shared:v", { value: 2, vector: [1, 0] }));
    expect(wrong).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest } });
    expect(wrong?.error?.message).toMatch(/dimension 2; namespace shared:v holds vectors of dimension 3/);
    expect(store.info("shared:v")).toMatchObject({ revision: 1, dimension: 3 });
  });

  it("skips a write whose namespace key was erased, and erase drops the namespace", async () => {
    const { store, keys } = fresh();
    const before = logged(keys, 1, "put", "principal:alice", { key: "card", value: "4111" });
    await applyLogEvent(store, keys, before);
    await applyLogEvent(store, keys, logged(keys, 2, "put", "principal:bob", { key: "card", value: "5500" }));
    const pending = logged(keys, 3, "put", "principal:alice", { key: "cvv", value: "123" });
    // The kernel destroys the key, then logs the erase.
    keys.erase("principal:alice");
    const skipped = await applyLogEvent(store, keys, pending);
    expect(skipped).toMatchObject({ ok: false, error: { code: ErrorCode.NotFound, detail: { erased: true } } });
    const erased = await applyLogEvent(store, keys, logged(keys, 4, "erase", "principal:alice", {}));
    expect(erased).toMatchObject({ ok: true, result: { erased: 1 } });
    expect(store.get("principal:alice", "card")).toBeUndefined();
    expect(store.get("principal:bob", "card")?.value).toBe("5500");
    // A fresh store replaying the same log opens nothing of alice's.
    const replay = fresh(keys.dir);
    await applyLogEvents(replay.store, replay.keys, [before, pending]);
    expect(replay.store.get("principal:alice", "card")).toBeUndefined();
    expect(replay.store.effectOutcome(1)?.error?.detail).toMatchObject({ erased: true });
  });
});

/** A deterministic mix of writes over three namespaces, with other log events in between. */
function history(keys: NamespaceKeys, count: number): { events: MemoryWriteEvent[]; entries: { seq: number; data: Uint8Array }[] } {
  let seed = 7;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const namespaces = ["agent:worker-1", "shared:team", "principal:alice"];
  const words = ["lmdb", "page", "reuse", "nats", "kernel", "policy", "cedar", "vector", "episode", "budget"];
  const events: MemoryWriteEvent[] = [];
  const entries: { seq: number; data: Uint8Array }[] = [];
  let seq = 0;
  const versions = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    // Every other entry is something else the kernel logged.
    seq++;
    entries.push({ seq, data: encode({ v: 1, seq, type: "message", id: `m${seq}`, at: T0 + seq, body: "hello" }) });
    seq++;
    const ns = namespaces[Math.floor(random() * namespaces.length)] as string;
    const key = `k${Math.floor(random() * 20)}`;
    const text = Array.from({ length: 6 }, () => words[Math.floor(random() * words.length)]).join(" ");
    const vector = Array.from({ length: 8 }, () => random() - 0.5);
    const r = random();
    let e: MemoryWriteEvent;
    if (r < 0.45) {
      const cas = random() < 0.3 ? { expectedVersion: versions.get(`${ns}/${key}`) ?? 0 } : {};
      e = logged(keys, seq, "put", ns, { key, value: { text, i }, vector, tags: [key.slice(0, 2)], ...(random() < 0.2 ? { ttlMs: 50 } : {}), ...cas });
      versions.set(`${ns}/${key}`, i);
    } else if (r < 0.8) {
      e = logged(keys, seq, "append", ns, { value: text, vector });
    } else if (r < 0.99) {
      e = logged(keys, seq, "delete", ns, { key });
    } else {
      keys.erase(ns);
      e = logged(keys, seq, "erase", ns, {});
    }
    e.at = T0 + seq;
    events.push(e);
    entries.push({ seq, data: encode(e) });
  }
  return { events, entries };
}

describe("rebuilding the store from the log", () => {
  it("rebuilds a store whose digest equals the live one, whatever the batch size", async () => {
    const live = fresh();
    const { events, entries } = history(live.keys, 600);
    // Live: one call at a time, as the kernel makes them.
    for (const e of events) await applyLogEvent(live.store, live.keys, e);
    const at = T0 + 10_000;
    const expected = live.store.digest({ at });
    expect(live.store.namespaces().length).toBe(3);
    live.clock.set(at);
    const team = live.store.count("shared:team");
    expect(team.kv).toBeGreaterThan(2);
    expect(team.episodes).toBeGreaterThan(10);
    expect(events.filter((e) => e.op === "erase").length).toBeGreaterThan(2);
    for (const batchSize of [1, 7, 10_000]) {
      const rebuilt = fresh(live.keys.dir);
      const report = await rebuildFromLog({ store: rebuilt.store, keys: rebuilt.keys, entries, batchSize });
      expect(report).toMatchObject({ read: 1200, applied: 600, repeated: 0, lastSeq: 1200 });
      expect(rebuilt.store.digest({ at })).toBe(expected);
      expect(rebuilt.store.resumeSeq()).toBe(1200);
      for (const e of events.slice(-50)) expect(rebuilt.store.effectOutcome(e.seq)).toEqual(live.store.effectOutcome(e.seq));
      rebuilt.clock.set(at);
      live.clock.set(at);
      const query = { permitted: ["shared:team"], query: "lmdb kernel", k: 5 };
      expect(live.store.searchText(query)).toHaveLength(5);
      expect(rebuilt.store.searchText(query)).toEqual(live.store.searchText(query));
    }
  });

  it("notices a difference: a store missing one write has another digest", async () => {
    const live = fresh();
    const { events } = history(live.keys, 120);
    for (const e of events) await applyLogEvent(live.store, live.keys, e);
    const partial = fresh(live.keys.dir);
    const skip = events.findIndex((e) => e.op === "put");
    await applyLogEvents(partial.store, partial.keys, events.filter((_, i) => i !== skip));
    expect(partial.store.digest({ at: T0 + 10_000 })).not.toBe(live.store.digest({ at: T0 + 10_000 }));
  });

  it("resumes where it stopped: already applied writes are not applied again", async () => {
    const live = fresh();
    const { entries } = history(live.keys, 200);
    const first = await rebuildFromLog({ store: live.store, keys: live.keys, entries: entries.slice(0, 150) });
    expect(live.store.resumeSeq()).toBe(150);
    // A catch-up that starts earlier than needed re-reads, and applies nothing twice.
    const second = await rebuildFromLog({ store: live.store, keys: live.keys, entries: entries.slice(100) });
    expect(first.applied + second.applied).toBe(200);
    expect(second.repeated).toBe(25);
    const whole = fresh(live.keys.dir);
    await rebuildFromLog({ store: whole.store, keys: whole.keys, entries });
    expect(live.store.digest({ at: T0 })).toBe(whole.store.digest({ at: T0 }));
  });

  it("refuses entries out of order", async () => {
    const { store, keys } = fresh();
    const { entries } = history(keys, 3);
    await expect(rebuildFromLog({ store, keys, entries: [entries[2]!, entries[0]!] })).rejects.toThrow(/out of order/);
  });
});

describe("posting rows", () => {
  it("appends a term's postings into rows of a bounded size and removes them with their records", async () => {
    const { store, keys } = fresh();
    const events = Array.from({ length: 300 }, (_, i) => logged(keys, i + 1, "put", "shared:p", { key: `k${i}`, value: `alpha ${i % 2 === 0 ? "even" : "odd"}` }));
    await applyLogEvents(store, keys, events.slice(0, 100));
    for (const e of events.slice(100)) await applyLogEvent(store, keys, e);
    const rows = store.stats().entries.postings;
    // alpha: 300 postings; even, odd: 150 each; the numbers are separate terms.
    const perTerm = (count: number) => Math.ceil(count / POSTING_ROW);
    expect(rows).toBeLessThanOrEqual(perTerm(300) + 2 * perTerm(150) + 300);
    expect(store.searchText({ permitted: ["shared:p"], query: "alpha", k: 1000 })).toHaveLength(300);
    expect(store.searchText({ permitted: ["shared:p"], query: "even", k: 1000 })).toHaveLength(150);
    const deletes = events.map((_, i) => logged(keys, 1000 + i, "delete", "shared:p", { key: `k${i}` }));
    await applyLogEvents(store, keys, deletes);
    expect(store.stats().entries.postings).toBe(0);
    expect(store.searchText({ permitted: ["shared:p"], query: "alpha", k: 10 })).toEqual([]);
  });

  it("indexes an import given out of version order like one given in order", async () => {
    const source = fresh();
    for (let i = 0; i < 400; i++) await applyLogEvent(source.store, source.keys, logged(source.keys, i + 1, "put", "shared:src", { key: `k${String(i).padStart(3, "0")}`, value: `beta gamma ${i}` }));
    const lines = [...source.store.exportNamespace("shared:src")];
    const shuffled = [lines[0]!, ...lines.slice(1).reverse()];
    const a = fresh();
    const b = fresh();
    await a.store.importNamespace(lines.join(""), { namespace: "shared:dst" });
    await b.store.importNamespace(shuffled.join(""), { namespace: "shared:dst" });
    const q = { permitted: ["shared:dst"], query: "beta", k: 1000 };
    expect(b.store.searchText(q).map((h) => h.record.key)).toEqual(a.store.searchText(q).map((h) => h.record.key));
    expect(b.store.searchText(q)).toHaveLength(400);
    expect(b.store.stats().entries.postings).toBe(a.store.stats().entries.postings);
  });
});
