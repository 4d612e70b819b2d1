/**
 * Measures memory search latency on this machine; not a test (tests never assert speed). Run:
 *
 *   node --import tsx services/memory/measure-search.ts [records=100000] [dimension=384]
 *
 * Fills a temp store with synthetic records (Zipf-distributed words, random unit vectors),
 * then prints p50/p95 of vector top-10, BM25 top-10 and hybrid top-10 at 10k and at the full
 * size, plus write throughput (single puts for the 10k namespace, batches for the large one)
 * and the first vector query of a namespace, which loads its vectors from LMDB. The target is
 * vector top-10 over 100k × 384 at p50 ≤ 50 ms. Meant to move into bench/ with `npm run bench`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openMemoryStore, type BatchOp, type MemoryStore } from "./mod.js";

const total = Number(process.argv[2] ?? 100_000);
const dimension = Number(process.argv[3] ?? 384);
const QUERIES = 50;

/** Deterministic PRNG (mulberry32) so runs are comparable. */
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

const random = prng(42);
const VOCABULARY = Array.from({ length: 20_000 }, (_, i) => `w${i.toString(36)}`);
/** Zipf(1) over the vocabulary by inverse CDF on harmonic numbers. */
const harmonic: number[] = [];
VOCABULARY.reduce((sum, _, i) => {
  harmonic.push(sum + 1 / (i + 1));
  return sum + 1 / (i + 1);
}, 0);
function word(): string {
  const target = random() * (harmonic[harmonic.length - 1] as number);
  let lo = 0;
  let hi = harmonic.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((harmonic[mid] as number) < target) lo = mid + 1;
    else hi = mid;
  }
  return VOCABULARY[lo] as string;
}
function sentence(words: number): string {
  return Array.from({ length: words }, word).join(" ");
}
function vector(): number[] {
  return Array.from({ length: dimension }, () => random() * 2 - 1);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function time(label: string, run: () => unknown): { label: string; p50: number; p95: number } {
  for (let i = 0; i < 3; i++) run();
  const samples: number[] = [];
  for (let i = 0; i < QUERIES; i++) {
    const start = performance.now();
    run();
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  return { label, p50: percentile(samples, 50), p95: percentile(samples, 95) };
}

/** Writes `count` records, one put per record (pipelined) or in batches of 500. */
async function fill(store: MemoryStore, ns: string, count: number, mode: "single" | "batch"): Promise<number> {
  const provenance = { writer: "bench", principal: "bench", causedBy: "bench-1", labels: [] };
  const start = performance.now();
  const inFlight: Promise<unknown>[] = [];
  let batch: BatchOp[] = [];
  for (let i = 0; i < count; i++) {
    const op: BatchOp = { op: "put", namespace: ns, key: `k${i}`, value: { n: i }, text: sentence(30), vector: vector(), provenance };
    if (mode === "single") inFlight.push(store.put(op));
    else batch.push(op);
    if (batch.length === 500) {
      inFlight.push(store.batch(batch));
      batch = [];
    }
    if (inFlight.length >= (mode === "single" ? 2000 : 4)) await Promise.all(inFlight.splice(0));
  }
  if (batch.length > 0) inFlight.push(store.batch(batch));
  await Promise.all(inFlight);
  return count / ((performance.now() - start) / 1000);
}

const dir = mkdtempSync(join(tmpdir(), "maxwell-memory-measure-"));
const store = openMemoryStore({ path: dir, noSync: true });
try {
  const rows: { label: string; p50: number; p95: number }[] = [];
  const small = Math.min(10_000, total);
  const rate = await fill(store, "shared:small", small, "single");
  process.stderr.write(`· wrote ${small} records (30 words, ${dimension}-dim vector) one put each at ${rate.toFixed(0)}/s\n`);
  const rateLarge = await fill(store, "shared:large", total, "batch");
  process.stderr.write(`· wrote ${total} records in batches of 500 at ${rateLarge.toFixed(0)}/s\n`);

  for (const [ns, n] of [["shared:small", small], ["shared:large", total]] as const) {
    const permitted = [ns];
    const first = performance.now();
    store.searchVector({ permitted, vector: vector(), k: 10 });
    rows.push({ label: `vector top-10, first query (loads ${n})`, p50: performance.now() - first, p95: Number.NaN });
    const queries = Array.from({ length: 8 }, () => vector());
    let q = 0;
    rows.push(time(`vector top-10 over ${n}`, () => store.searchVector({ permitted, vector: queries[q++ % queries.length] as number[], k: 10 })));
    const texts = Array.from({ length: 8 }, () => sentence(3));
    rows.push(time(`bm25 top-10 over ${n} (3-word queries)`, () => store.searchText({ permitted, query: texts[q++ % texts.length] as string, k: 10 })));
    rows.push(time(`bm25 top-10 over ${n} (most common word)`, () => store.searchText({ permitted, query: VOCABULARY[0] as string, k: 10 })));
    rows.push(
      time(`hybrid top-10 over ${n}`, () =>
        store.searchHybrid({ permitted, query: texts[q % texts.length] as string, vector: queries[q++ % queries.length] as number[], k: 10 }),
      ),
    );
  }
  process.stdout.write(`\n${"what".padEnd(52)} ${"p50 ms".padStart(9)} ${"p95 ms".padStart(9)}\n`);
  for (const r of rows) process.stdout.write(`${r.label.padEnd(52)} ${r.p50.toFixed(2).padStart(9)} ${r.p95.toFixed(2).padStart(9)}\n`);
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
