/**
 * The memory store on a real LMDB environment (one temp dir for the file, a fresh store per
 * test): namespaces, versions and compare-and-set, TTL on an injected clock, episodic ranges,
 * provenance on every read, the bad-input rules of the memory issue, the state digest,
 * JSON Lines export/import, compaction and batches.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import {
  MemoryLimits,
  isNamespace,
  namespaceOf,
  openMemoryStore,
  parseNamespace,
  type BatchOp,
  type MemoryStore,
  type Provenance,
} from "../../services/memory/mod.js";

const T0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

let root: string;
const open: MemoryStore[] = [];
let counter = 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "maxwell-memory-store-"));
});

afterAll(async () => {
  for (const store of open) await store.close();
  rmSync(root, { recursive: true, force: true });
});

/** A fresh store in its own directory, on a clock the test moves by hand. */
function fresh(): { store: MemoryStore; clock: { t: number } } {
  const clock = { t: T0 };
  const store = openMemoryStore({ path: join(root, `s${counter++}`), now: () => clock.t, noSync: true });
  open.push(store);
  return { store, clock };
}

const prov = (over: Partial<Provenance> = {}): Provenance => ({
  writer: "worker-1",
  principal: "alice",
  causedBy: "01JF0000000000000000000001",
  labels: [],
  ...over,
});

/** The MaxwellError `f` throws or rejects with. */
async function failure(f: () => unknown): Promise<MaxwellError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    return err as MaxwellError;
  }
  throw new Error("expected a MaxwellError, but nothing was thrown");
}

describe("memory namespaces", () => {
  it.each(["agent:worker-1", "principal:alice", "shared:team_a", `agent:${"a".repeat(64)}`])("accepts %j", (ns) => {
    expect(isNamespace(ns)).toBe(true);
    expect(parseNamespace(ns)).toBe(ns);
  });

  it.each([
    ["empty", "", /empty/],
    ["no kind prefix", "worker-1", /no kind prefix/],
    ["an unknown kind", "team:x", /unknown kind/],
    ["a path separator", "agent:a/b", /path separators/],
    ["a backslash", "agent:a\\b", /path separators/],
    ["a parent-directory path", "agent:../etc", /path separators/],
    ["a single-token wildcard", "agent:*", /wildcards/],
    ["a full wildcard", "shared:>", /wildcards/],
    ["a question mark", "agent:a?", /wildcards/],
    ["a NUL byte", "agent:a\u0000", /control characters/],
    ["a newline", "agent:a\nb", /control characters/],
    ["a zero-width space", "agent:a\u200bb", /control characters/],
    ["a dot", "agent:a.b", /identity name/],
    ["upper case", "agent:Alice", /identity name/],
    ["an oversized name", `agent:${"a".repeat(65)}`, /identity name/],
    ["an oversized id", `principal:${"a".repeat(70)}`, /longer than/],
  ])("refuses a namespace with %s", (_what, ns, reason) => {
    expect(isNamespace(ns)).toBe(false);
    let err: unknown;
    try {
      parseNamespace(ns);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MaxwellError);
    expect((err as MaxwellError).code).toBe("bad_request");
    expect((err as MaxwellError).message).toMatch(reason);
  });

  it("builds a namespace from a kind and a validated name", () => {
    expect(namespaceOf("agent", "w")).toBe("agent:w");
    expect(() => namespaceOf("agent", "W/")).toThrow(MaxwellError);
  });
});

describe("memory store: key/value records", () => {
  it("returns what was put, with its version, tags and provenance", async () => {
    const { store } = fresh();
    const written = await store.put({
      namespace: "agent:w",
      key: "plan",
      value: { step: 1, items: ["a", "b"] },
      tags: ["todo", "plan", "todo"],
      provenance: prov({ labels: ["web", "untrusted", "web"] }),
    });
    const read = store.get("agent:w", "plan");
    expect(read).toEqual(written);
    expect(read).toMatchObject({
      namespace: "agent:w",
      kind: "kv",
      key: "plan",
      version: 1,
      at: T0,
      tags: ["plan", "todo"],
      value: { step: 1, items: ["a", "b"] },
      provenance: { writer: "worker-1", principal: "alice", causedBy: "01JF0000000000000000000001", labels: ["untrusted", "web"] },
    });
    expect(store.get("agent:w", "other")).toBeUndefined();
    expect(store.get("agent:v", "plan")).toBeUndefined();
  });

  it("gives every write a higher version, also across a delete and re-create", async () => {
    const { store } = fresh();
    const v1 = await store.put({ namespace: "agent:w", key: "k", value: 1, provenance: prov() });
    const v2 = await store.put({ namespace: "agent:w", key: "k", value: 2, provenance: prov() });
    await store.put({ namespace: "agent:w", key: "other", value: 0, provenance: prov() });
    expect(await store.delete({ namespace: "agent:w", key: "k" })).toBe(true);
    const v3 = await store.put({ namespace: "agent:w", key: "k", value: 3, provenance: prov() });
    expect([v1.version, v2.version, v3.version]).toEqual([1, 2, 4]);
    expect(store.info("agent:w").revision).toBe(4);
    // Namespaces count separately.
    expect((await store.put({ namespace: "agent:x", key: "k", value: 1, provenance: prov() })).version).toBe(1);
  });

  it("compare-and-set writes only over the expected version and names both versions when it refuses", async () => {
    const { store } = fresh();
    const v1 = await store.put({ namespace: "agent:w", key: "k", value: "first", provenance: prov() });
    const v2 = await store.put({ namespace: "agent:w", key: "k", value: "second", expectedVersion: v1.version, provenance: prov() });
    expect(v2.version).toBe(2);

    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: "stale", expectedVersion: 1, provenance: prov() }));
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/expected version 1, but it is at version 2/);
    expect(e.detail).toMatchObject({ namespace: "agent:w", key: "k", expectedVersion: 1, actualVersion: 2 });
    expect(store.get("agent:w", "k")).toMatchObject({ value: "second", version: 2 });
    expect(store.info("agent:w").revision).toBe(2);
  });

  it("treats expectedVersion 0 as create-only", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: 1, expectedVersion: 0, provenance: prov() });
    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: 2, expectedVersion: 0, provenance: prov() }));
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/expected version 0, but it is at version 1/);
  });

  it("lets exactly one of two racing compare-and-sets win", async () => {
    const { store } = fresh();
    const base = await store.put({ namespace: "agent:w", key: "k", value: 0, provenance: prov() });
    const results = await Promise.allSettled([
      store.put({ namespace: "agent:w", key: "k", value: "a", expectedVersion: base.version, provenance: prov() }),
      store.put({ namespace: "agent:w", key: "k", value: "b", expectedVersion: base.version, provenance: prov() }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect((lost.reason as MaxwellError).code).toBe("conflict");
    expect(store.get("agent:w", "k")?.value).toBe("a");
  });

  it("deletes only at the expected version, and reports whether anything was deleted", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: 1, provenance: prov() });
    const e = await failure(() => store.delete({ namespace: "agent:w", key: "k", expectedVersion: 7 }));
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/expected version 7, but it is at version 1/);
    expect(store.get("agent:w", "k")?.value).toBe(1);
    expect(await store.delete({ namespace: "agent:w", key: "k", expectedVersion: 1 })).toBe(true);
    expect(store.get("agent:w", "k")).toBeUndefined();
    expect(await store.delete({ namespace: "agent:w", key: "k" })).toBe(false);
  });

  it("lists keys in order, by prefix, a page at a time", async () => {
    const { store } = fresh();
    for (const key of ["b/1", "a", "b", "b-2", "b-1", "c"].filter((k) => !k.includes("/"))) {
      await store.put({ namespace: "agent:w", key, value: key, provenance: prov() });
    }
    expect(store.list("agent:w").map((r) => r.key)).toEqual(["a", "b", "b-1", "b-2", "c"]);
    expect(store.list("agent:w", { prefix: "b" }).map((r) => r.key)).toEqual(["b", "b-1", "b-2"]);
    expect(store.list("agent:w", { prefix: "b", after: "b", limit: 1 }).map((r) => r.key)).toEqual(["b-1"]);
    expect(store.list("agent:w", { after: "b-2" }).map((r) => r.key)).toEqual(["c"]);
  });

  it("records the applied log sequence with the write, never moving it back", async () => {
    const { store } = fresh();
    expect(store.appliedSeq()).toBe(0);
    await store.put({ namespace: "agent:w", key: "k", value: 1, provenance: prov(), seq: 40 });
    await store.append({ namespace: "agent:w", value: 1, provenance: prov(), seq: 41 });
    expect(store.appliedSeq()).toBe(41);
    await store.delete({ namespace: "agent:w", key: "k", seq: 12 });
    expect(store.appliedSeq()).toBe(41);
  });

  it("refuses every operation once closed", async () => {
    const { store } = fresh();
    await store.close();
    expect((await failure(() => store.get("agent:w", "k"))).code).toBe("unavailable");
    expect((await failure(() => store.put({ namespace: "agent:w", key: "k", value: 1, provenance: prov() }))).code).toBe("unavailable");
  });
});

describe("memory store: TTL", () => {
  it("hides a record from every read the moment it expires", async () => {
    const { store, clock } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: 1, ttlMs: 1000, provenance: prov() });
    await store.append({ namespace: "agent:w", value: "e", ttlMs: 1000, provenance: prov() });
    expect(store.get("agent:w", "k")).toMatchObject({ expiresAt: T0 + 1000 });

    clock.t = T0 + 999;
    expect(store.get("agent:w", "k")?.value).toBe(1);
    expect(store.list("agent:w")).toHaveLength(1);
    expect(store.episodes("agent:w")).toHaveLength(1);

    clock.t = T0 + 1000;
    expect(store.get("agent:w", "k")).toBeUndefined();
    expect(store.list("agent:w")).toEqual([]);
    expect(store.episodes("agent:w")).toEqual([]);
    expect([...store.exportNamespace("agent:w")]).toHaveLength(1); // the header only
  });

  it("treats an expired key as absent: create-only succeeds, and a delete finds nothing", async () => {
    const { store, clock } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: "old", ttlMs: 10, provenance: prov() });
    clock.t += 10;
    expect(await store.delete({ namespace: "agent:w", key: "k" })).toBe(false);
    await store.put({ namespace: "agent:w", key: "k", value: "old", ttlMs: 10, provenance: prov() });
    clock.t += 10;
    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: "x", expectedVersion: 2, provenance: prov() }));
    expect(e.detail).toMatchObject({ actualVersion: 0 });
    const r = await store.put({ namespace: "agent:w", key: "k", value: "new", expectedVersion: 0, provenance: prov() });
    expect(r.version).toBe(3);
    expect(store.get("agent:w", "k")).toMatchObject({ value: "new" });
  });

  it("measures the TTL from the write's own time", async () => {
    const { store, clock } = fresh();
    const r = await store.put({ namespace: "agent:w", key: "k", value: 1, at: T0 - 500, ttlMs: 1000, provenance: prov() });
    expect(r.expiresAt).toBe(T0 + 500);
    clock.t = T0 + 500;
    expect(store.get("agent:w", "k")).toBeUndefined();
  });
});

describe("memory store: episodes", () => {
  it("appends time-ordered entries and reads them by time range, limit and direction", async () => {
    const { store, clock } = fresh();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      clock.t = T0 + Math.floor(i / 2) * 1000; // two episodes per second
      ids.push((await store.append({ namespace: "agent:w", value: { i }, provenance: prov() })).key);
    }
    expect([...ids].sort()).toEqual(ids);
    expect(store.episodes("agent:w").map((e) => e.value)).toEqual([0, 1, 2, 3, 4, 5].map((i) => ({ i })));
    // from inclusive, to exclusive
    expect(store.episodes("agent:w", { from: T0 + 1000, to: T0 + 2000 }).map((e) => e.value)).toEqual([{ i: 2 }, { i: 3 }]);
    expect(store.episodes("agent:w", { from: T0 + 1000 }).map((e) => e.value)).toEqual([2, 3, 4, 5].map((i) => ({ i })));
    expect(store.episodes("agent:w", { to: T0 + 1000 }).map((e) => e.value)).toEqual([{ i: 0 }, { i: 1 }]);
    expect(store.episodes("agent:w", { limit: 2, reverse: true }).map((e) => e.value)).toEqual([{ i: 5 }, { i: 4 }]);
    expect(store.episodes("agent:w", { from: T0 + 1000, to: T0 + 3000, reverse: true, limit: 3 }).map((e) => e.value)).toEqual([
      { i: 5 },
      { i: 4 },
      { i: 3 },
    ]);
    expect(store.episodes("agent:w", { from: T0 + 9000 })).toEqual([]);
  });

  it("keeps episodes and key/value records apart", async () => {
    const { store } = fresh();
    const e = await store.append({ namespace: "agent:w", value: "episode", provenance: prov() });
    await store.put({ namespace: "agent:w", key: "k", value: "kv", provenance: prov() });
    expect(store.get("agent:w", e.key)).toBeUndefined();
    expect(store.get("agent:w", e.key, "episode")).toMatchObject({ kind: "episode", value: "episode", version: 1 });
    expect(store.list("agent:w").map((r) => r.key)).toEqual(["k"]);
    expect(store.episodes("agent:w").map((r) => r.kind)).toEqual(["episode"]);
    expect(await store.delete({ namespace: "agent:w", key: e.key, kind: "episode" })).toBe(true);
    expect(store.episodes("agent:w")).toEqual([]);
  });

  it("returns provenance and labels with every episode", async () => {
    const { store } = fresh();
    await store.append({ namespace: "agent:w", value: "fetched page", provenance: prov({ labels: ["web:untrusted"], causedBy: "01JF0000000000000000000009" }) });
    expect(store.episodes("agent:w")[0]?.provenance).toEqual({
      writer: "worker-1",
      principal: "alice",
      causedBy: "01JF0000000000000000000009",
      labels: ["web:untrusted"],
    });
  });
});

describe("memory store: bad input", () => {
  const bigString = "x".repeat(MemoryLimits.maxValueBytes);

  it.each([
    ["a slash", "a/b", /path separators/],
    ["a backslash", "a\\b", /path separators/],
    ["a single-token wildcard", "a*", /wildcards/],
    ["a full wildcard", ">", /wildcards/],
    ["a question mark", "what?", /wildcards/],
    ["a NUL byte", "a\u0000b", /control characters/],
    ["a newline", "a\nb", /control characters/],
    ["DEL", "a\u007f", /control characters/],
    ["a C1 control", "a\u0085", /control characters/],
    ["a lone surrogate", "a\ud800", /well-formed/],
    ["no characters", "", /empty/],
    ["513 UTF-8 bytes", "é".repeat(256) + "x", /513 bytes; the limit is 512/],
  ])("refuses a key with %s, and writes nothing", async (_what, key, reason) => {
    const { store } = fresh();
    const before = store.digest();
    const e = await failure(() => store.put({ namespace: "agent:w", key, value: 1, provenance: prov() }));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(reason);
    expect((await failure(() => store.get("agent:w", key))).code).toBe("bad_request");
    expect((await failure(() => store.delete({ namespace: "agent:w", key }))).code).toBe("bad_request");
    expect(store.digest()).toBe(before);
    expect(store.namespaces()).toEqual([]);
  });

  it.each([
    ["a path separator", "agent:a/b"],
    ["a wildcard", "agent:*"],
    ["a control character", "agent:a\u0007"],
    ["no kind", "a"],
  ])("refuses a namespace with %s in every operation", async (_what, namespace) => {
    const { store } = fresh();
    const calls: (() => unknown)[] = [
      () => store.put({ namespace, key: "k", value: 1, provenance: prov() }),
      () => store.append({ namespace, value: 1, provenance: prov() }),
      () => store.get(namespace, "k"),
      () => store.delete({ namespace, key: "k" }),
      () => store.episodes(namespace),
      () => store.list(namespace),
      () => store.eraseNamespace(namespace),
      () => store.exportNamespace(namespace).next(),
    ];
    for (const call of calls) {
      const e = await failure(call);
      expect(e.code).toBe("bad_request");
      expect(e.message).toMatch(/invalid namespace/);
    }
    expect(store.namespaces()).toEqual([]);
  });

  it("refuses a value over 64 KiB encoded, and accepts one just under", async () => {
    const { store } = fresh();
    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: bigString, provenance: prov() }));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/value too large: 65541 bytes encoded; the limit is 65536/);
    expect(store.get("agent:w", "k")).toBeUndefined();
    expect(store.info("agent:w").revision).toBe(0);
    await store.put({ namespace: "agent:w", key: "k", value: bigString.slice(0, MemoryLimits.maxValueBytes - 5), provenance: prov() });
    expect((await failure(() => store.append({ namespace: "agent:w", value: [bigString], provenance: prov() }))).code).toBe("bad_request");
  });

  it.each([
    ["undefined", undefined],
    ["a function", () => 1],
    ["a class instance", new Map([["a", 1]])],
    ["an undefined field", { a: undefined }],
    ["a sparse array", [1, , 3]], // eslint-disable-line no-sparse-arrays
    ["a __proto__ key", JSON.parse('{"__proto__": {"polluted": true}}') as unknown],
    ["a lone surrogate", { s: "\udc00" }],
    ["nesting deeper than 32", JSON.parse("[".repeat(40) + "]".repeat(40)) as unknown],
  ])("refuses a value that is %s", async (_what, value) => {
    const { store } = fresh();
    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: value as never, provenance: prov() }));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/invalid value/);
    expect(store.get("agent:w", "k")).toBeUndefined();
  });

  it("refuses vectors of the wrong dimension, with NaN or Infinity, empty, zero or too long, and writes nothing", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "v", value: 1, vector: [1, 0, 0], provenance: prov() });
    const before = store.digest();
    const cases: [unknown, RegExp][] = [
      [[1, 0], /dimension 2; namespace agent:w holds vectors of dimension 3/],
      [[1, 0, 0, 0], /dimension 4; namespace agent:w holds vectors of dimension 3/],
      [[1, Number.NaN, 0], /element 1 is NaN/],
      [[1, Number.POSITIVE_INFINITY, 0], /element 1 is Infinity/],
      [[1, 0, 1e39], /element 2 is 1e\+39/],
      [[], /dimension 0/],
      [[0, 0, 0], /zero vector/],
      [new Array(MemoryLimits.maxDimension + 1).fill(1), /dimension 4097/],
      [[1, "2", 3], /element 1 is not a number/],
      ["1,2,3", /expected an array of numbers/],
    ];
    for (const [vector, reason] of cases) {
      const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: 1, vector: vector as number[], provenance: prov() }));
      expect(e.code).toBe("bad_request");
      expect(e.message).toMatch(reason);
      const a = await failure(() => store.append({ namespace: "agent:w", value: 1, vector: vector as number[], provenance: prov() }));
      expect(a.code).toBe("bad_request");
    }
    expect(store.digest()).toBe(before);
    expect(store.info("agent:w")).toEqual({ namespace: "agent:w", revision: 1, dimension: 3 });
  });

  it.each([
    ["a missing provenance", { provenance: undefined }, /invalid provenance/],
    ["an invalid writer", { provenance: prov({ writer: "Worker 1" }) }, /provenance.writer/],
    ["an invalid principal", { provenance: prov({ principal: "" }) }, /provenance.principal/],
    ["a causing event with a slash", { provenance: prov({ causedBy: "a/b" }) }, /provenance.causedBy/],
    ["a label with a control character", { provenance: prov({ labels: ["ok", "bad\u0001"] }) }, /control characters/],
    ["too many labels", { provenance: prov({ labels: Array.from({ length: 65 }, (_, i) => `l${i}`) }) }, /65 entries; the limit is 64/],
    ["a tag with a wildcard", { tags: ["a*"] }, /wildcards/],
    ["a tag that is not a string", { tags: [7] }, /expected a string/],
    ["a zero TTL", { ttlMs: 0 }, /invalid ttlMs 0/],
    ["a fractional TTL", { ttlMs: 1.5 }, /invalid ttlMs 1.5/],
    ["a negative time", { at: -1 }, /invalid at -1/],
    ["a time past year 9999", { at: MemoryLimits.maxTime + 1 }, /invalid at/],
    ["a negative expected version", { expectedVersion: -1 }, /invalid expectedVersion -1/],
    ["text that is not a string", { text: 5 }, /invalid text/],
    ["text over 64 KiB", { text: "a".repeat(MemoryLimits.maxTextBytes + 1) }, /text too large/],
    ["a negative log sequence", { seq: -3 }, /invalid seq -3/],
  ])("refuses a write with %s", async (_what, override, reason) => {
    const { store } = fresh();
    const e = await failure(() => store.put({ namespace: "agent:w", key: "k", value: 1, provenance: prov(), ...(override as object) }));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(reason);
    expect(store.namespaces()).toEqual([]);
  });

  it("rejects the returned promise on bad input instead of throwing at the call", async () => {
    const { store } = fresh();
    const writes = [
      store.put({ namespace: "agent:w", key: "a/b", value: 1, provenance: prov() }),
      store.append({ namespace: "agent:*", value: 1, provenance: prov() }),
      store.delete({ namespace: "agent:w", key: "" }),
      store.batch([null as never]),
      store.eraseNamespace("x"),
      store.importNamespace("{}"),
    ];
    for (const write of writes) await expect(write).rejects.toMatchObject({ name: "MaxwellError", code: "bad_request" });
  });

  it("refuses range reads with a limit outside 1..1000", async () => {
    const { store } = fresh();
    for (const limit of [0, 1001, 1e9, 2.5, -1]) {
      expect((await failure(() => store.episodes("agent:w", { limit }))).message).toMatch(/invalid limit/);
      expect((await failure(() => store.list("agent:w", { limit }))).message).toMatch(/invalid limit/);
    }
  });
});

/** One history of writes, applied one at a time or as a batch: builds twin stores. */
async function history(store: MemoryStore, clock: { t: number }, mode: "single" | "batch"): Promise<void> {
  const ops: BatchOp[] = [
    { op: "put" as const, namespace: "agent:w", key: "plan", value: { step: 1 }, tags: ["p"], provenance: prov(), at: T0 },
    { op: "put" as const, namespace: "agent:w", key: "plan", value: { step: 2 }, expectedVersion: 1, provenance: prov({ labels: ["web"] }), at: T0 + 1 },
    { op: "put" as const, namespace: "agent:w", key: "gone", value: "x", vector: [0, 1], provenance: prov(), at: T0 + 2 },
    { op: "append" as const, namespace: "agent:w", value: "saw a thing", vector: [1, 1], text: "a thing", provenance: prov(), at: T0 + 3 },
    { op: "delete" as const, namespace: "agent:w", key: "gone" },
    { op: "append" as const, namespace: "agent:w", value: "short-lived", ttlMs: 100, provenance: prov(), at: T0 + 4 },
    { op: "put" as const, namespace: "shared:team", key: "bin", value: { raw: new Uint8Array([1, 2, 3]) }, provenance: prov({ principal: "bob" }), at: T0 + 5 },
  ];
  if (mode === "batch") {
    await store.batch(ops);
  } else {
    for (const { op, ...req } of ops) {
      if (op === "put") await store.put(req as never);
      else if (op === "append") await store.append(req as never);
      else await store.delete(req as never);
    }
  }
  clock.t = T0 + 10;
}

describe("memory store: state digest", () => {
  it("is equal for two stores built from the same history, one write at a time and in one batch", async () => {
    const a = fresh();
    const b = fresh();
    await history(a.store, a.clock, "single");
    await history(b.store, b.clock, "batch");
    expect(a.store.digest()).toMatch(/^[0-9a-f]{64}$/);
    expect(b.store.digest()).toBe(a.store.digest());
  });

  it("changes when a value, a label, a tag or a vector differs", async () => {
    const base = fresh();
    await base.store.put({ namespace: "agent:w", key: "k", value: 1, tags: ["t"], vector: [1, 2], provenance: prov() });
    const variants: Parameters<MemoryStore["put"]>[0][] = [
      { namespace: "agent:w", key: "k", value: 2, tags: ["t"], vector: [1, 2], provenance: prov() },
      { namespace: "agent:w", key: "k", value: 1, tags: ["t"], vector: [1, 2], provenance: prov({ labels: ["x"] }) },
      { namespace: "agent:w", key: "k", value: 1, tags: ["u"], vector: [1, 2], provenance: prov() },
      { namespace: "agent:w", key: "k", value: 1, tags: ["t"], vector: [1, 3], provenance: prov() },
    ];
    for (const variant of variants) {
      const other = fresh();
      await other.store.put(variant);
      expect(other.store.digest()).not.toBe(base.store.digest());
    }
  });

  it("ignores expired records whether or not compaction has removed them", async () => {
    const a = fresh();
    const b = fresh();
    await history(a.store, a.clock, "single");
    await history(b.store, b.clock, "single");
    a.clock.t = b.clock.t = T0 + 200; // the short-lived episode expired at T0 + 104
    expect((await a.store.compact()).removed).toBe(1);
    expect(a.store.stats().entries.records).toBe(b.store.stats().entries.records - 1);
    expect(a.store.digest()).toBe(b.store.digest());
    expect(b.store.digest({ at: T0 + 50 })).not.toBe(b.store.digest());
  });

  it("can cover chosen namespaces only", async () => {
    const a = fresh();
    const b = fresh();
    await history(a.store, a.clock, "single");
    await b.store.put({ namespace: "agent:other", key: "k", value: 1, provenance: prov() });
    await history(b.store, b.clock, "single");
    expect(b.store.digest()).not.toBe(a.store.digest());
    expect(b.store.digest({ namespaces: ["agent:w", "shared:team"] })).toBe(a.store.digest({ namespaces: ["shared:team", "agent:w"] }));
  });
});

describe("memory store: export and import", () => {
  async function rich(store: MemoryStore): Promise<void> {
    await store.put({ namespace: "agent:w", key: "json", value: { a: [1, 2.5, "x", null, true], b: { c: -3 } }, tags: ["t2", "t1"], provenance: prov({ labels: ["web"] }) });
    await store.put({ namespace: "agent:w", key: "json", value: { a: 1 }, text: "explicit search text", expectedVersion: 1, provenance: prov() });
    await store.put({ namespace: "agent:w", key: "binary", value: { bytes: new Uint8Array([0, 255, 7]), when: new Date(T0) }, provenance: prov() });
    await store.put({ namespace: "agent:w", key: "odd numbers", value: [Number.NaN, -0, Number.POSITIVE_INFINITY, 2 ** 60, 0.1], provenance: prov() });
    await store.put({ namespace: "agent:w", key: "ttl", value: "soon gone", ttlMs: 60_000, vector: [0.5, -0.25, 1], provenance: prov() });
    await store.append({ namespace: "agent:w", value: "an episode", vector: [1, 2, 3], tags: ["ep"], provenance: prov({ causedBy: "01JF000000000000000000000X" }) });
    await store.put({ namespace: "agent:w", key: "deleted", value: 0, provenance: prov() });
    await store.delete({ namespace: "agent:w", key: "deleted" });
    await store.put({ namespace: "agent:other", key: "not exported", value: 1, provenance: prov() });
  }

  it("round-trips a namespace exactly: equal digest, equal export, versions continue", async () => {
    const a = fresh();
    await rich(a.store);
    const lines = [...a.store.exportNamespace("agent:w")];
    expect(lines.every((line) => line.endsWith("\n"))).toBe(true);
    expect(JSON.parse(lines[0] as string)).toEqual({ format: "maxwell.memory", version: 1, namespace: "agent:w", revision: 7, dimension: 3, at: T0 });
    expect(lines).toHaveLength(6);

    const b = fresh();
    const summary = await b.store.importNamespace(lines.join(""));
    expect(summary).toEqual({ namespace: "agent:w", records: 5, revision: 7 });
    expect(b.store.digest({ namespaces: ["agent:w"] })).toBe(a.store.digest({ namespaces: ["agent:w"] }));
    expect([...b.store.exportNamespace("agent:w")]).toEqual(lines);
    const binary = b.store.get("agent:w", "binary")?.value as { bytes: Uint8Array; when: Date };
    expect(binary.bytes).toBeInstanceOf(Uint8Array);
    expect([...binary.bytes]).toEqual([0, 255, 7]);
    expect(binary.when).toEqual(new Date(T0));
    // msgpack itself stores -0 as 0: the import gives back exactly what the store held.
    const odd = b.store.get("agent:w", "odd numbers")?.value as number[];
    expect(odd).toEqual(a.store.get("agent:w", "odd numbers")?.value);
    expect(odd[0]).toBeNaN();
    expect(odd[2]).toBe(Number.POSITIVE_INFINITY);
    expect(b.store.get("agent:w", "ttl")).toMatchObject({ expiresAt: T0 + 60_000, vector: [0.5, -0.25, 1] });
    expect(b.store.searchText({ permitted: ["agent:w"], query: "explicit", k: 5 }).map((h) => h.record.key)).toEqual(["json"]);
    expect((await b.store.put({ namespace: "agent:w", key: "next", value: 1, provenance: prov() })).version).toBe(8);
  });

  it("round-trips through a stream of chunks and into another namespace", async () => {
    const a = fresh();
    await rich(a.store);
    const text = [...a.store.exportNamespace("agent:w")].join("");
    async function* chunks(): AsyncGenerator<string> {
      for (let i = 0; i < text.length; i += 7) yield text.slice(i, i + 7);
    }
    const b = fresh();
    expect((await b.store.importNamespace(chunks(), { namespace: "shared:restored" })).records).toBe(5);
    expect(b.store.get("shared:restored", "json")).toMatchObject({ namespace: "shared:restored", version: 2, value: { a: 1 } });
  });

  it("refuses to import into a namespace that holds records, writing nothing", async () => {
    const a = fresh();
    await rich(a.store);
    const text = [...a.store.exportNamespace("agent:w")].join("");
    const b = fresh();
    await b.store.put({ namespace: "agent:w", key: "mine", value: 1, provenance: prov() });
    const before = b.store.digest();
    const e = await failure(() => b.store.importNamespace(text));
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/agent:w holds records/);
    expect(b.store.digest()).toBe(before);
  });

  it.each([
    ["a key with a slash", (r: Record<string, unknown>) => ({ ...r, key: "a/b" }), /line 2: invalid key "a\/b": path separators/],
    ["a version above the revision", (r: Record<string, unknown>) => ({ ...r, version: 99 }), /line 2: version 99 is above the header's revision/],
    ["both value forms", (r: Record<string, unknown>) => ({ ...r, valueMsgpack: "AA==" }), /line 2: expected exactly one of value and valueMsgpack/],
    ["an unknown field", (r: Record<string, unknown>) => ({ ...r, extra: 1 }), /line 2: unknown field "extra"/],
    ["a vector of the wrong dimension", (r: Record<string, unknown>) => ({ ...r, vector: [1, 2] }), /line 2: vector has dimension 2; the header says 3/],
    ["a NaN in a vector", (r: Record<string, unknown>) => ({ ...r, vector: [1, null, 2] }), /line 2: invalid vector: element 1 is not a number/],
    ["an invalid provenance", (r: Record<string, unknown>) => ({ ...r, provenance: { writer: "x" } }), /line 2: invalid provenance.principal/],
  ])("refuses an export line with %s, naming the line and writing nothing", async (_what, corrupt, reason) => {
    const a = fresh();
    await a.store.put({ namespace: "agent:w", key: "k", value: 1, vector: [1, 2, 3], provenance: prov() });
    const [header, record] = [...a.store.exportNamespace("agent:w")] as [string, string];
    const bad = `${header}${JSON.stringify(corrupt(JSON.parse(record) as Record<string, unknown>))}\n`;
    const b = fresh();
    const e = await failure(() => b.store.importNamespace(bad));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(reason);
    expect(b.store.namespaces()).toEqual([]);
  });

  it("refuses input that is not an export", async () => {
    const { store } = fresh();
    expect((await failure(() => store.importNamespace(""))).message).toMatch(/empty/);
    expect((await failure(() => store.importNamespace("not json\n"))).message).toMatch(/line 1: not valid JSON/);
    expect((await failure(() => store.importNamespace('{"format":"other"}\n'))).message).toMatch(/line 1: not a maxwell.memory export/);
  });
});

describe("memory store: compaction and size", () => {
  it("removes expired records with all their index rows", async () => {
    const { store, clock } = fresh();
    await store.put({ namespace: "agent:w", key: "keep", value: "lasting words", vector: [1, 0], provenance: prov() });
    const baseline = store.stats().entries;
    for (let i = 0; i < 50; i++) {
      await store.put({ namespace: "agent:w", key: `t${i}`, value: `temporary words number ${i}`, vector: [1, i], ttlMs: 1000 + i, provenance: prov() });
    }
    expect(store.stats().entries.records).toBe(baseline.records + 50);
    clock.t = T0 + 1025; // records 0..25 have expired (expiresAt ≤ now)
    const report = await store.compact({ batch: 7 });
    expect(report).toEqual({ removed: 26, effectsPruned: 0, now: T0 + 1025 });
    expect(store.stats().entries.records).toBe(baseline.records + 24);
    clock.t = T0 + 5000;
    expect((await store.compact()).removed).toBe(24);
    const after = store.stats().entries;
    expect(after).toEqual({ ...baseline, meta: 1 });
    expect(store.searchText({ permitted: ["agent:w"], query: "words", k: 10 }).map((h) => h.record.key)).toEqual(["keep"]);
    expect(store.searchVector({ permitted: ["agent:w"], vector: [1, 1], k: 10 }).map((h) => h.record.key)).toEqual(["keep"]);
  });

  it("keeps one version of a key: overwrites leave no postings, docs or vectors behind", async () => {
    const { store } = fresh();
    for (let i = 0; i < 200; i++) {
      await store.put({ namespace: "agent:w", key: "k", value: `revision ${i} mentions word${i}`, vector: [i + 1, 1], provenance: prov() });
    }
    const { entries } = store.stats();
    expect(entries).toMatchObject({ records: 1, docs: 1, vectors: 1, expiry: 0 });
    expect(entries.postings).toBe(4); // revision, 199, mentions, word199: one chunk each
    expect(store.searchText({ permitted: ["agent:w"], query: "word5", k: 5 })).toEqual([]);
  });

  it("stays within the pages of its live data across rounds of expiring writes", async () => {
    const { store, clock } = fresh();
    const round = async (r: number): Promise<void> => {
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 400; i++) {
        writes.push(
          store.put({
            namespace: "agent:w",
            key: `r${r}-${i}`,
            value: { text: `round ${r} item ${i} with some searchable words`, pad: "p".repeat(200) },
            vector: [r + 1, i + 1, 1],
            ttlMs: 1000,
            provenance: prov(),
          }),
        );
      }
      await Promise.all(writes);
      clock.t += 1000;
      expect((await store.compact()).removed).toBe(400);
    };
    await round(0);
    await round(1);
    const settled = store.stats().lastPage;
    for (let r = 2; r < 8; r++) await round(r);
    const { entries, lastPage } = store.stats();
    expect(entries).toMatchObject({ records: 0, expiry: 0, docs: 0, postings: 0, vectors: 0 });
    // Eight rounds of 400 records wrote ~4× the pages of one round; freed pages are reused.
    expect(lastPage).toBeLessThanOrEqual(settled * 1.25);
  });
});

describe("memory store: batches and erasure", () => {
  it("applies a batch all or nothing, naming the failing operation", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: 0, provenance: prov() });
    const before = store.digest();
    const e = await failure(() =>
      store.batch([
        { op: "put", namespace: "agent:w", key: "a", value: 1, provenance: prov() },
        { op: "append", namespace: "agent:w", value: 2, provenance: prov() },
        { op: "put", namespace: "agent:w", key: "k", value: 3, expectedVersion: 9, provenance: prov() },
      ]),
    );
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/^batch operation 2: /);
    expect(e.detail).toMatchObject({ index: 2 });
    expect(store.digest()).toBe(before);
    const bad = await failure(() => store.batch([{ op: "put", namespace: "agent:w", key: "ok", value: 1, provenance: prov() }, { op: "delete", namespace: "agent:w", key: "a*" }]));
    expect(bad.message).toMatch(/^batch operation 1: invalid key/);
    expect(store.digest()).toBe(before);
  });

  it("sees its own earlier writes inside a batch", async () => {
    const { store } = fresh();
    const [first, second, deleted] = await store.batch([
      { op: "put", namespace: "agent:w", key: "k", value: 1, expectedVersion: 0, provenance: prov() },
      { op: "put", namespace: "agent:w", key: "k", value: 2, expectedVersion: 1, provenance: prov() },
      { op: "delete", namespace: "agent:w", key: "k", expectedVersion: 2 },
    ]);
    expect([(first as { version: number }).version, (second as { version: number }).version, deleted]).toEqual([1, 2, true]);
    expect(store.get("agent:w", "k")).toBeUndefined();
  });

  it("erases a namespace, keeps its revision, and leaves the others alone", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: "secret words", vector: [1, 2], provenance: prov() });
    await store.append({ namespace: "agent:w", value: "more words", provenance: prov() });
    await store.put({ namespace: "agent:x", key: "k", value: "other words", provenance: prov() });
    const other = store.digest({ namespaces: ["agent:x"] });
    expect(await store.eraseNamespace("agent:w")).toBe(2);
    expect(store.list("agent:w")).toEqual([]);
    expect(store.episodes("agent:w")).toEqual([]);
    expect(store.info("agent:w")).toEqual({ namespace: "agent:w", revision: 2 });
    expect(store.searchText({ permitted: ["agent:w", "agent:x"], query: "words", k: 10 }).map((h) => h.record.namespace)).toEqual(["agent:x"]);
    expect(store.digest({ namespaces: ["agent:x"] })).toBe(other);
    expect((await store.put({ namespace: "agent:w", key: "k", value: 1, vector: [1, 2, 3], provenance: prov() })).version).toBe(3);
  });
});
