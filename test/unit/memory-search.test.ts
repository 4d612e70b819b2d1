/**
 * Memory search on a real LMDB environment: BM25 ranking (checked against the formula by
 * hand), vector top-k against a brute-force reference, hybrid fusion, filters, and isolation:
 * a namespace the caller may not read is never returned and changes no score.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import { BM25, RRF_K, openMemoryStore, tokenize, type MemoryStore, type Provenance, type SearchHit } from "../../services/memory/mod.js";

const T0 = 1_767_225_600_000;

let root: string;
const open: MemoryStore[] = [];
let counter = 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "maxwell-memory-search-"));
});

afterAll(async () => {
  for (const store of open) await store.close();
  rmSync(root, { recursive: true, force: true });
});

function fresh(path = join(root, `s${counter++}`)): { store: MemoryStore; clock: { t: number }; path: string } {
  const clock = { t: T0 };
  const store = openMemoryStore({ path, now: () => clock.t, noSync: true });
  open.push(store);
  return { store, clock, path };
}

const prov: Provenance = { writer: "worker-1", principal: "alice", causedBy: "01JF0000000000000000000001", labels: [] };

async function failure(f: () => unknown): Promise<MaxwellError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    return err as MaxwellError;
  }
  throw new Error("expected a MaxwellError, but nothing was thrown");
}

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const keys = (hits: SearchHit[]): string[] => hits.map((h) => h.record.key);
const scores = (hits: SearchHit[]): number[] => hits.map((h) => h.score);

describe("memory search: tokenizer", () => {
  it("lower-cases, normalizes, splits on non-word characters and drops stop words", () => {
    expect(tokenize("The Quick-Brown fox's ＬＭＤＢ page, and 42 pages!")).toEqual(["quick", "brown", "fox", "s", "lmdb", "page", "42", "pages"]);
    expect(tokenize("Ünïcode naïve café")).toEqual(["ünïcode", "naïve", "café"]);
    expect(tokenize("the of and")).toEqual([]);
  });
});

describe("memory search: full text (BM25)", () => {
  it("scores documents exactly by the BM25 formula over the searched namespace", async () => {
    const { store } = fresh();
    const docs = { a: "lmdb lmdb pages", b: "lmdb reuses freed pages quickly", c: "nothing relevant here at all" };
    for (const [key, text] of Object.entries(docs)) await store.put({ namespace: "agent:w", key, value: text, provenance: prov });
    const hits = store.searchText({ permitted: ["agent:w"], query: "lmdb", k: 10 });

    const lengths = Object.values(docs).map((d) => tokenize(d).length);
    const avg = lengths.reduce((x, y) => x + y, 0) / lengths.length;
    const idf = Math.log(1 + (3 - 2 + 0.5) / (2 + 0.5));
    const bm25 = (tf: number, len: number): number => (idf * tf * (BM25.k1 + 1)) / (tf + BM25.k1 * (1 - BM25.b + (BM25.b * len) / avg));
    expect(keys(hits)).toEqual(["a", "b"]);
    expect(hits[0]?.score).toBeCloseTo(bm25(2, 3), 12);
    expect(hits[1]?.score).toBeCloseTo(bm25(1, 5), 12);
  });

  it("ranks more occurrences, rarer terms and shorter documents higher", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "once", value: "cache miss on the read path and other words", provenance: prov });
    await store.put({ namespace: "agent:w", key: "thrice", value: "cache cache cache and other words too", provenance: prov });
    await store.put({ namespace: "agent:w", key: "rare", value: "eviction policy notes", provenance: prov });
    for (let i = 0; i < 5; i++) await store.put({ namespace: "agent:w", key: `filler${i}`, value: `policy filler document ${i}`, provenance: prov });
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "cache", k: 2 }))).toEqual(["thrice", "once"]);
    // "eviction" is in one document, "policy" in six: the rare term decides.
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "policy eviction", k: 1 }))).toEqual(["rare"]);
    await store.put({ namespace: "agent:w", key: "short", value: "cache", provenance: prov });
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "cache", k: 3 }))[0]).toBe("short");
  });

  it("follows updates and deletes, and finds nothing for stop words only", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: "alpha beta", provenance: prov });
    await store.put({ namespace: "agent:w", key: "k", value: "gamma", provenance: prov });
    expect(store.searchText({ permitted: ["agent:w"], query: "alpha", k: 5 })).toEqual([]);
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "gamma", k: 5 }))).toEqual(["k"]);
    await store.delete({ namespace: "agent:w", key: "k" });
    expect(store.searchText({ permitted: ["agent:w"], query: "gamma", k: 5 })).toEqual([]);
    await store.put({ namespace: "agent:w", key: "k", value: "the and of", provenance: prov });
    expect(store.searchText({ permitted: ["agent:w"], query: "the of", k: 5 })).toEqual([]);
  });

  it("indexes explicit text instead of the value, and the value's strings otherwise", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "explicit", value: { note: "zebra" }, text: "yak", provenance: prov });
    await store.put({ namespace: "agent:w", key: "derived", value: { note: "zebra", nested: ["quokka", 3] }, provenance: prov });
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "zebra", k: 5 }))).toEqual(["derived"]);
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "yak", k: 5 }))).toEqual(["explicit"]);
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "quokka", k: 5 }))).toEqual(["derived"]);
    expect(keys(store.searchText({ permitted: ["agent:w"], query: "note", k: 5 }))).toEqual([]); // map keys are not text
  });

  it("returns the record with its provenance and labels", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: "poisoned advice", provenance: { ...prov, labels: ["web:untrusted"] } });
    const [hit] = store.searchText({ permitted: ["agent:w"], query: "advice", k: 1 });
    expect(hit?.record).toMatchObject({ key: "k", value: "poisoned advice", provenance: { labels: ["web:untrusted"], causedBy: prov.causedBy } });
  });

  it("filters by tags, kinds, time and TTL", async () => {
    const { store, clock } = fresh();
    await store.put({ namespace: "agent:w", key: "tagged", value: "report draft", tags: ["q3"], at: T0 - 100, provenance: prov });
    await store.put({ namespace: "agent:w", key: "plain", value: "report report", at: T0 - 50, ttlMs: 100, provenance: prov });
    const episode = await store.append({ namespace: "agent:w", value: "report sent", tags: ["q3", "mail"], at: T0, provenance: prov });
    const run = (filter: object): string[] => keys(store.searchText({ permitted: ["agent:w"], query: "report", k: 10, ...filter }));
    // "report draft" and "report sent" tie; equal scores rank the newer record first.
    expect(run({})).toEqual(["plain", episode.key, "tagged"]);
    expect(run({ tags: ["q3"] })).toEqual([episode.key, "tagged"]);
    expect(run({ tags: ["q3", "mail"] })).toEqual([episode.key]);
    expect(run({ kinds: ["kv"] })).toEqual(["plain", "tagged"]);
    expect(run({ from: T0 - 50, to: T0 })).toEqual(["plain"]);
    clock.t = T0 + 50; // "plain" expires
    expect(run({})).toEqual([episode.key, "tagged"]);
  });

  it("pages through posting chunks: a term in 600 documents ranks them all", async () => {
    const { store } = fresh();
    await store.batch(
      Array.from({ length: 600 }, (_, i) => ({
        op: "put" as const,
        namespace: "agent:w",
        key: `d${String(i).padStart(3, "0")}`,
        value: `common ${"pad ".repeat(i % 7)}`,
        provenance: prov,
      })),
    );
    const hits = store.searchText({ permitted: ["agent:w"], query: "common", k: 1000 });
    expect(hits).toHaveLength(600);
    // Shorter documents first; equal scores newest first.
    expect(hits[0]?.record.key).toBe("d595");
    expect(scores(hits)).toEqual([...scores(hits)].sort((a, b) => b - a));
  });
});

describe("memory search: isolation", () => {
  /** Two stores with the same permitted data; the second also holds a foreign namespace. */
  async function twins(): Promise<{ alone: MemoryStore; crowded: MemoryStore }> {
    const alone = fresh().store;
    const crowded = fresh().store;
    const random = prng(7);
    for (const store of [alone, crowded]) {
      await store.put({ namespace: "agent:w", key: "mine-1", value: "deploy notes for the lmdb cluster", vector: [1, 0.1, 0], provenance: prov });
      await store.put({ namespace: "agent:w", key: "mine-2", value: "lmdb page reuse and lmdb freelists", vector: [0.2, 1, 0], provenance: prov });
      await store.append({ namespace: "shared:team", value: "team lmdb runbook", vector: [0, 0.3, 1], provenance: prov });
    }
    // The foreign namespace matches the query better than anything permitted, and shifts every
    // statistic BM25 would use if it leaked in: document count, average length, df.
    for (let i = 0; i < 40; i++) {
      await crowded.put({
        namespace: "agent:spy",
        key: `s${i}`,
        value: `lmdb lmdb lmdb ${"filler ".repeat(Math.floor(random() * 20))}`,
        vector: [1, 0.1, 0],
        provenance: { ...prov, writer: "spy" },
      });
    }
    return { alone, crowded };
  }

  it("never returns, ranks or counts a record outside the permitted namespaces", async () => {
    const { alone, crowded } = await twins();
    const permitted = ["agent:w", "shared:team"];
    const text = { permitted, query: "lmdb", k: 50 };
    const vector = { permitted, vector: [1, 0.1, 0], k: 50 };
    const hybrid = { ...text, vector: [1, 0.1, 0] };
    for (const [name, run] of [
      ["text", (s: MemoryStore) => s.searchText(text)],
      ["vector", (s: MemoryStore) => s.searchVector(vector)],
      ["hybrid", (s: MemoryStore) => s.searchHybrid(hybrid)],
    ] as const) {
      const expected = run(alone);
      const actual = run(crowded);
      expect(actual.every((h) => h.record.namespace !== "agent:spy"), name).toBe(true);
      expect(keys(actual), name).toEqual(keys(expected));
      expect(scores(actual), name).toEqual(scores(expected));
      expect(actual.length, name).toBe(3);
    }
    // The spy's records are there, and would win if they were permitted.
    expect(crowded.searchText({ permitted: ["agent:spy", ...permitted], query: "lmdb", k: 1 })[0]?.record.namespace).toBe("agent:spy");
  });

  it("computes statistics over the narrowed namespaces only", async () => {
    const { alone, crowded } = await twins();
    const narrowed = crowded.searchText({ permitted: ["agent:w", "shared:team", "agent:spy"], namespaces: ["agent:w"], query: "lmdb", k: 10 });
    expect(scores(narrowed)).toEqual(scores(alone.searchText({ permitted: ["agent:w"], query: "lmdb", k: 10 })));
  });

  it("refuses to search a namespace that is not permitted", async () => {
    const { crowded } = await twins();
    const e = await failure(() => crowded.searchText({ permitted: ["agent:w"], namespaces: ["agent:w", "agent:spy"], query: "lmdb", k: 5 }));
    expect(e.code).toBe("forbidden");
    expect(e.message).toMatch(/agent:spy is not readable/);
    expect((await failure(() => crowded.searchVector({ permitted: ["agent:w"], namespaces: ["agent:spy"], vector: [1, 0, 0], k: 5 }))).code).toBe("forbidden");
  });

  it("finds nothing when nothing is permitted", async () => {
    const { crowded } = await twins();
    expect(crowded.searchText({ permitted: [], query: "lmdb", k: 5 })).toEqual([]);
    expect(crowded.searchVector({ permitted: [], vector: [1, 0, 0], k: 5 })).toEqual([]);
    expect(crowded.searchHybrid({ permitted: [], query: "lmdb", vector: [1, 0, 0], k: 5 })).toEqual([]);
  });
});

describe("memory search: vectors", () => {
  const DIM = 48;

  function randomVector(random: () => number): number[] {
    return Array.from({ length: DIM }, () => random() * 2 - 1);
  }

  /** Cosine similarity in double precision from the stored (float32) values. */
  function cosine(a: readonly number[], b: readonly number[]): number {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = 0; i < a.length; i++) {
      const x = Math.fround(a[i] as number);
      const y = Math.fround(b[i] as number);
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    return dot / Math.sqrt(na * nb);
  }

  function reference(corpus: Map<string, number[]>, query: number[], k: number): { key: string; score: number }[] {
    return [...corpus]
      .map(([key, v]) => ({ key, score: cosine(v, query) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, k);
  }

  function expectMatches(hits: SearchHit[], expected: { key: string; score: number }[]): void {
    expect(hits.map((h) => `${h.record.namespace}/${h.record.key}`)).toEqual(expected.map((e) => e.key));
    hits.forEach((h, i) => expect(h.score).toBeCloseTo((expected[i] as { score: number }).score, 5));
  }

  it("returns the same top-k as a brute-force reference, across namespaces and after changes", async () => {
    const { store, path } = fresh();
    const random = prng(1);
    const corpus = new Map<string, number[]>();
    const ops = [];
    for (let i = 0; i < 1500; i++) {
      const ns = i % 3 === 0 ? "shared:team" : "agent:w";
      const v = randomVector(random);
      corpus.set(`${ns}/k${i}`, v);
      ops.push({ op: "put" as const, namespace: ns, key: `k${i}`, value: i, vector: v, provenance: prov });
    }
    await store.batch(ops);
    const permitted = ["agent:w", "shared:team"];
    const queries = Array.from({ length: 5 }, () => randomVector(random));
    for (const q of queries) expectMatches(store.searchVector({ permitted, vector: q, k: 10 }), reference(corpus, q, 10));

    // Changes after the namespaces are in memory: overwrite, delete, add.
    for (let i = 0; i < 300; i++) {
      const ns = i % 3 === 0 ? "shared:team" : "agent:w";
      if (i % 2 === 0) {
        await store.delete({ namespace: ns, key: `k${i}` });
        corpus.delete(`${ns}/k${i}`);
      } else {
        const v = randomVector(random);
        await store.put({ namespace: ns, key: `k${i}`, value: -i, vector: v, provenance: prov });
        corpus.set(`${ns}/k${i}`, v);
      }
    }
    await store.put({ namespace: "agent:w", key: "no-vector", value: "text only", provenance: prov });
    const bestFirst = queries[0] as number[];
    await store.put({ namespace: "agent:w", key: "exact", value: 0, vector: bestFirst, provenance: prov });
    corpus.set("agent:w/exact", bestFirst);
    for (const q of queries) expectMatches(store.searchVector({ permitted, vector: q, k: 25 }), reference(corpus, q, 25));
    expect(store.searchVector({ permitted, vector: bestFirst, k: 1 })[0]?.score).toBeCloseTo(1, 6);

    // A reopened store loads the same vectors from LMDB.
    await store.close();
    const reopened = fresh(path).store;
    for (const q of queries) expectMatches(reopened.searchVector({ permitted, vector: q, k: 25 }), reference(corpus, q, 25));
  });

  it("answers across more namespaces than it keeps in memory", async () => {
    const random = prng(3);
    const roomy = fresh().store;
    const tight = openMemoryStore({ path: join(root, `s${counter++}`), now: () => T0, noSync: true, maxLoadedVectorNamespaces: 1 });
    open.push(tight);
    const permitted = ["agent:a", "agent:b", "shared:c"];
    const ops = Array.from({ length: 300 }, (_, i) => ({
      op: "put" as const,
      namespace: permitted[i % 3] as string,
      key: `k${i}`,
      value: i,
      vector: randomVector(random),
      provenance: prov,
    }));
    await roomy.batch(ops);
    await tight.batch(ops);
    for (let round = 0; round < 3; round++) {
      const q = randomVector(random);
      const expected = roomy.searchVector({ permitted, vector: q, k: 20 });
      expect(keys(tight.searchVector({ permitted, vector: q, k: 20 }))).toEqual(keys(expected));
      // Writes to a namespace that was evicted are picked up when it loads again.
      await tight.put({ namespace: "agent:a", key: `new${round}`, value: 0, vector: q, provenance: prov });
      await roomy.put({ namespace: "agent:a", key: `new${round}`, value: 0, vector: q, provenance: prov });
      expect(keys(tight.searchVector({ permitted, vector: q, k: 5 }))).toEqual(keys(roomy.searchVector({ permitted, vector: q, k: 5 })));
    }
  });

  it("filters by tags, kinds, time and TTL before taking the top k", async () => {
    const { store, clock } = fresh();
    await store.put({ namespace: "agent:w", key: "best", value: 1, vector: [1, 0], tags: ["a"], at: T0 - 3000, provenance: prov });
    await store.put({ namespace: "agent:w", key: "second", value: 2, vector: [1, 0.2], tags: ["a", "b"], at: T0 - 2000, provenance: prov });
    await store.put({ namespace: "agent:w", key: "third", value: 3, vector: [1, 0.5], tags: ["b"], at: T0 - 1000, ttlMs: 2000, provenance: prov });
    const episode = await store.append({ namespace: "agent:w", value: 4, vector: [1, 0.7], at: T0, provenance: prov });
    const run = (filter: object): string[] => keys(store.searchVector({ permitted: ["agent:w"], vector: [1, 0], k: 2, ...filter }));
    expect(run({})).toEqual(["best", "second"]);
    expect(run({ tags: ["b"] })).toEqual(["second", "third"]);
    expect(run({ tags: ["a", "b"] })).toEqual(["second"]);
    expect(run({ kinds: ["episode"] })).toEqual([episode.key]);
    expect(run({ from: T0 - 2000 })).toEqual(["second", "third"]);
    expect(run({ from: T0 - 2000, to: T0 - 1000 })).toEqual(["second"]);
    clock.t = T0 + 1000; // "third" expires
    expect(run({ tags: ["b"] })).toEqual(["second"]);
    expect(run({ from: T0 - 1500 })).toEqual([episode.key]);
  });

  it("refuses bad queries with a clear error", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "k", value: 1, vector: [1, 2, 3], provenance: prov });
    const permitted = ["agent:w"];
    const cases: [object, RegExp][] = [
      [{ vector: [1, 2] }, /dimension 2; namespace agent:w holds vectors of dimension 3/],
      [{ vector: [1, Number.NaN, 3] }, /element 1 is NaN/],
      [{ vector: [1, Number.NEGATIVE_INFINITY, 3] }, /element 1 is -Infinity/],
      [{ vector: [0, 0, 0] }, /zero vector/],
      [{ vector: [1, 2, 3], k: 0 }, /invalid k 0: expected an integer from 1 to 1000/],
      [{ vector: [1, 2, 3], k: 1e9 }, /invalid k 1000000000/],
      [{ vector: [1, 2, 3], k: 1001 }, /invalid k 1001/],
      [{ vector: [1, 2, 3], k: 2.5 }, /invalid k 2.5/],
      [{ vector: [1, 2, 3], k: "10" }, /invalid k "10"/],
      [{ vector: [1, 2, 3], tags: ["a/b"] }, /path separators/],
      [{ vector: [1, 2, 3], kinds: ["other"] }, /invalid kind/],
      [{ vector: [1, 2, 3], from: -5 }, /invalid from/],
      [{ vector: [1, 2, 3], permitted: ["agent:*"] }, /invalid namespace "agent:\*"/],
      [{ vector: [1, 2, 3], permitted: "agent:w" }, /invalid permitted/],
    ];
    for (const [override, reason] of cases) {
      const e = await failure(() => store.searchVector({ permitted, k: 5, ...override } as never));
      expect(e.code).toBe("bad_request");
      expect(e.message).toMatch(reason);
    }
    for (const k of [0, 1e9]) {
      expect((await failure(() => store.searchText({ permitted, query: "x", k }))).code).toBe("bad_request");
      expect((await failure(() => store.searchHybrid({ permitted, query: "x", vector: [1, 2, 3], k }))).code).toBe("bad_request");
    }
    expect((await failure(() => store.searchText({ permitted, query: "  ", k: 5 }))).message).toMatch(/invalid query/);
    expect((await failure(() => store.searchText({ permitted, query: "x".repeat(4097), k: 5 }))).message).toMatch(/query too long/);
    // A namespace without vectors imposes no dimension.
    expect(store.searchVector({ permitted: ["agent:empty"], vector: [1, 2], k: 5 })).toEqual([]);
  });
});

describe("memory search: hybrid", () => {
  it("fuses the text and vector rankings by reciprocal rank", async () => {
    const { store } = fresh();
    await store.put({ namespace: "agent:w", key: "both", value: "lmdb freelist notes", vector: [1, 0], provenance: prov });
    await store.put({ namespace: "agent:w", key: "text-only", value: "lmdb lmdb lmdb", vector: [0, 1], provenance: prov });
    await store.put({ namespace: "agent:w", key: "vector-only", value: "unrelated words", vector: [0.9, 0.1], provenance: prov });
    const hits = store.searchHybrid({ permitted: ["agent:w"], query: "freelist lmdb", vector: [1, 0], k: 3 });
    expect(keys(hits)).toEqual(["both", "text-only", "vector-only"]);
    expect(hits[0]).toMatchObject({ text: { rank: 1 }, vector: { rank: 1 } });
    expect(hits[0]?.score).toBeCloseTo(2 / (RRF_K + 1), 12);
    expect(hits[1]).toMatchObject({ text: { rank: 2 }, vector: { rank: 3 } });
    expect(hits[1]?.score).toBeCloseTo(1 / (RRF_K + 2) + 1 / (RRF_K + 3), 12);
    expect(hits[2]?.text).toBeUndefined();
    expect(hits[2]).toMatchObject({ vector: { rank: 2 } });
    expect(hits[2]?.score).toBeCloseTo(1 / (RRF_K + 2), 12);
  });
});
