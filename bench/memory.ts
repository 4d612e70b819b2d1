/**
 * Memory figures for `npm run bench` (issue 4), measured in the same run as the floor and the
 * kernel figures they are compared with:
 *
 * - get and put through the kernel: an agent's `ctx.memory` against the real memory service
 *   (started here, in the bench's deployment), one call at a time; and the same operations on raw
 *   LMDB (the `lmdb` package, durable commits like the service's) on this machine, now;
 * - search latency with the store library directly, at 10k and 100k records of 30 words and a
 *   384-dimension vector: full-text (BM25), vector and hybrid top-10, and the first vector query of
 *   a namespace, which loads its vectors;
 * - rebuilding the store from a log written the way the kernel writes it (sealed values), records/s.
 *
 * Each phase is bounded by a count and a time budget; the whole takes well under 90 s.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { open } from "lmdb";
import { encode } from "../src/protocol/mod.js";
import { NamespaceKeys } from "../src/memory/keys.js";
import { parseMemoryArgs } from "../src/memory/ops.js";
import { sealMemoryArgs } from "../src/memory/sealing.js";
import type { AdminClient } from "../src/runtime/admin-client.js";
import { spawnService, type ServiceProcess } from "../src/runtime/deployment.js";
import type { Logger } from "../src/runtime/logger.js";
import { defineAgent, runAgent, type AgentContext, type RunningAgent } from "../src/sdk/mod.js";
import { openMemoryStore, rebuildFromLog, type BatchOp, type MemoryStore, type MemoryWriteEvent } from "../services/memory/mod.js";
import { sequential, summarize, type Latency, type SequentialResult } from "./stats.js";
import type { Row } from "./table.js";

/** Issue 4's targets on this machine. */
export const MEMORY_TARGETS = {
  /** Memory get through the kernel, p50, at most this many times the kernel's request-reply p50. */
  getVsRequestReplyMax: 2,
  /** Vector top-10 over 100k 384-dimension records, p50. */
  vectorTop10Over100kMsMax: 50,
  /** Rebuilding the store from the log. */
  rebuildRecordsPerSecMin: 100_000,
} as const;

export interface MemoryBenchDeps {
  /** The bench's nats-server. */
  url: string;
  /** The bench's deployment (data) dir: the memory service runs on it; scratch stores go under it. */
  dir: string;
  admin: AdminClient;
  log: Logger;
  /** Called with the memory service process as soon as it is spawned, so the caller can stop it on an abort. */
  onService?: (service: ServiceProcess) => void;
}

export interface SearchFigures {
  records: number;
  /** Records/s written into the store for this size (batches). */
  fillPerSec: number;
  /** The first vector query of the namespace: loads its vectors from LMDB. */
  vectorFirstMs: number;
  vector: Latency;
  text: Latency;
  hybrid: Latency;
}

export interface MemoryResults {
  /** Through the kernel: `ctx.memory` → kernel (authorize, seal, log) → memory service → LMDB. */
  kernel: { put: SequentialResult; get: SequentialResult; serviceReadyMs: number };
  /** The `lmdb` package on its own: `await put` (a durable commit each) and `get`. */
  lmdb: { put: SequentialResult; get: SequentialResult };
  search: { dimension: number; words: number; queries: number; sizes: SearchFigures[] };
  rebuild: { shape: string; records: number; logEntries: number; ms: number; recordsPerSec: number };
  durationMs: number;
}

const AGENT = "bench-mem";
const NAMESPACE = `agent:${AGENT}`;
const DIMENSION = 384;
const WORDS = 30;
const QUERIES = 50;
const SEARCH_SIZES = [10_000, 100_000] as const;
const FILL_BATCH = 10_000;
const REBUILD_RECORDS = 50_000;
const T0 = 1_767_225_600_000;

/** Deterministic PRNG (mulberry32), so runs index the same data. */
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

/** Synthetic text and embeddings: Zipf(1) words over a 20,000-word vocabulary, uniform random vectors. */
class Corpus {
  readonly vocabulary = Array.from({ length: 20_000 }, (_, i) => `w${i.toString(36)}`);
  private readonly harmonic: number[] = [];
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = prng(seed);
    let sum = 0;
    for (let i = 0; i < this.vocabulary.length; i++) this.harmonic.push((sum += 1 / (i + 1)));
  }

  word(): string {
    const target = this.random() * (this.harmonic[this.harmonic.length - 1] as number);
    let lo = 0;
    let hi = this.harmonic.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.harmonic[mid] as number) < target) lo = mid + 1;
      else hi = mid;
    }
    return this.vocabulary[lo] as string;
  }

  sentence(words: number): string {
    return Array.from({ length: words }, () => this.word()).join(" ");
  }

  vector(dimension = DIMENSION): number[] {
    return Array.from({ length: dimension }, () => this.random() * 2 - 1);
  }
}

async function stopService(service: ServiceProcess): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill("SIGTERM");
  const stopped = await Promise.race([service.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())]);
  if (!stopped) {
    service.child.kill("SIGKILL");
    await service.exited;
  }
}

/** get and put through the kernel, one call at a time, from an agent's own context. */
async function throughKernel(say: (line: string) => void, deps: MemoryBenchDeps): Promise<MemoryResults["kernel"]> {
  say("memory service: starting on the bench's deployment (it reads the log through the kernel first)");
  const t0 = performance.now();
  const service = spawnService("memory", ["--data", deps.dir, "--nats", deps.url], { env: { MAXWELL_LOG_LEVEL: "warn" }, readyTimeoutMs: 60_000 });
  deps.onService?.(service);
  const agents: RunningAgent[] = [];
  try {
    await service.ready;
    const serviceReadyMs = performance.now() - t0;
    const reg = await deps.admin.register({ name: AGENT, kind: "agent" });
    let ctx: AgentContext | undefined;
    agents.push(
      await runAgent(
        defineAgent({
          name: AGENT,
          onMessage: () => undefined,
          onStart: (c) => {
            ctx = c;
          },
        }),
        { servers: deps.url, creds: new TextEncoder().encode(reg.creds), log: deps.log },
      ),
    );
    if (!ctx) throw new Error(`${AGENT}'s onStart did not run`);
    const A = ctx;
    const corpus = new Corpus(7);
    const values = Array.from({ length: 64 }, () => ({ text: corpus.sentence(8) }));
    let written = 0;
    say("memory put through the kernel, sequential (N=1000 after 50 warmup, or 12 s)");
    const put = await sequential(
      async (i) => {
        await A.memory(NAMESPACE, "put", { key: `k${i}`, value: values[i % values.length] ?? null });
        written = i + 1;
      },
      { n: 1000, warmup: 50, budgetMs: 12_000 },
    );
    say("memory get through the kernel, sequential (N=1000 after 50 warmup, or 8 s)");
    const get = await sequential(
      async (i) => {
        const { result } = await A.memory<{ record: unknown }>(NAMESPACE, "get", { key: `k${(i * 7919) % written}` });
        if (result.record === null) throw new Error(`memory get k${(i * 7919) % written}: no record`);
      },
      { n: 1000, warmup: 50, budgetMs: 8_000 },
    );
    return { put, get, serviceReadyMs };
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()));
    await stopService(service);
  }
}

/** The same operations on raw LMDB: the floor under the memory service's store. */
async function rawLmdb(say: (line: string) => void, dir: string): Promise<MemoryResults["lmdb"]> {
  say("raw LMDB put (durable commit each, sequential, N=1000 or 8 s) and get (N=5000 or 3 s)");
  const db = open<{ text: string }, string>({ path: dir });
  try {
    const corpus = new Corpus(7);
    const values = Array.from({ length: 64 }, () => ({ text: corpus.sentence(8) }));
    let written = 0;
    const put = await sequential(
      async (i) => {
        await db.put(`k${i}`, values[i % values.length] as { text: string });
        written = i + 1;
      },
      { n: 1000, warmup: 50, budgetMs: 8_000 },
    );
    const get = await sequential(
      (i) => {
        if (db.get(`k${(i * 7919) % written}`) === undefined) throw new Error("raw LMDB get: no record");
        return Promise.resolve();
      },
      { n: 5000, warmup: 500, budgetMs: 3_000 },
    );
    return { put, get };
  } finally {
    await db.close();
  }
}

function timeQueries(run: () => unknown): Latency {
  for (let i = 0; i < 3; i++) run();
  const samples: number[] = [];
  for (let i = 0; i < QUERIES; i++) {
    const start = performance.now();
    run();
    samples.push(performance.now() - start);
  }
  return summarize(samples);
}

async function fill(store: MemoryStore, corpus: Corpus, namespace: string, count: number): Promise<number> {
  const provenance = { writer: "bench", principal: "bench", causedBy: "bench-1", labels: [] };
  let spent = 0;
  for (let from = 0; from < count; from += FILL_BATCH) {
    const ops: BatchOp[] = [];
    for (let i = from; i < Math.min(count, from + FILL_BATCH); i++) {
      ops.push({ op: "put", namespace, key: `k${i}`, value: { n: i }, text: corpus.sentence(WORDS), vector: corpus.vector(), provenance });
    }
    const t0 = performance.now();
    await store.batch(ops);
    spent += performance.now() - t0;
  }
  return count / (spent / 1000);
}

/** Search latency with the store library: one namespace per size, queries drawn from the same corpus. */
async function search(say: (line: string) => void, dir: string): Promise<MemoryResults["search"]> {
  const store = openMemoryStore({ path: dir, noSync: true });
  const corpus = new Corpus(42);
  const sizes: SearchFigures[] = [];
  try {
    for (const records of SEARCH_SIZES) {
      const namespace = `shared:bench-${records}`;
      say(`memory search: writing ${records} records (${WORDS} words, ${DIMENSION}-dim vector) in batches of ${FILL_BATCH}`);
      const fillPerSec = await fill(store, corpus, namespace, records);
      const permitted = [namespace];
      const first = performance.now();
      store.searchVector({ permitted, vector: corpus.vector(), k: 10 });
      const vectorFirstMs = performance.now() - first;
      const vectors = Array.from({ length: 8 }, () => corpus.vector());
      const texts = Array.from({ length: 8 }, () => corpus.sentence(3));
      let q = 0;
      say(`memory search over ${records}: vector, full-text and hybrid top-10, ${QUERIES} queries each`);
      const vector = timeQueries(() => store.searchVector({ permitted, vector: vectors[q++ % vectors.length] as number[], k: 10 }));
      const text = timeQueries(() => store.searchText({ permitted, query: texts[q++ % texts.length] as string, k: 10 }));
      const hybrid = timeQueries(() => store.searchHybrid({ permitted, query: texts[q % texts.length] as string, vector: vectors[q++ % vectors.length] as number[], k: 10 }));
      sizes.push({ records, fillPerSec, vectorFirstMs, vector, text, hybrid });
    }
    return { dimension: DIMENSION, words: WORDS, queries: QUERIES, sizes };
  } finally {
    await store.close();
  }
}

const REBUILD_SHAPE = "kv puts and episodes alternating, 8-word values, 16 namespaces, a message event between writes";

/**
 * A log the way the kernel writes it: each memory write an `effect.started` event with its value
 * sealed under the namespace key, msgpack-encoded, and a message event between writes.
 */
function memoryLog(keys: NamespaceKeys, count: number): { seq: number; data: Uint8Array }[] {
  const random = prng(42);
  const vocabulary = Array.from({ length: 20_000 }, (_, i) => `w${i.toString(36)}`);
  const sentence = (n: number): string => Array.from({ length: n }, () => vocabulary[Math.floor(random() ** 3 * vocabulary.length)] as string).join(" ");
  const namespaces = Array.from({ length: 16 }, (_, i) => `agent:a${i}`);
  const entries: { seq: number; data: Uint8Array }[] = [];
  let seq = 0;
  for (let i = 0; i < count; i++) {
    seq++;
    entries.push({ seq, data: encode({ v: 1, seq, prev: "0".repeat(64), id: `m${seq}`, at: T0 + seq, type: "message", actor: "a0", principal: "p", body: "ping" }) });
    seq++;
    const ns = namespaces[i % namespaces.length] as string;
    const append = i % 2 === 1;
    const key = random() < 0.2 && i > 100 ? `k${Math.floor(random() * i)}` : `k${i}`;
    const op = append ? "append" : "put";
    const args = parseMemoryArgs(op, { ...(append ? {} : { key }), value: { text: sentence(8), n: i } });
    const event: MemoryWriteEvent & Record<string, unknown> = {
      v: 1,
      seq,
      prev: "0".repeat(64),
      id: `01JF${String(seq).padStart(22, "0")}`,
      at: T0 + seq,
      type: "effect.started",
      kind: "mem",
      op,
      target: ns,
      args: sealMemoryArgs(keys, op, ns, args),
      actor: "worker-1",
      principal: "alice",
      syscall: `s${seq}`,
      trace: "0af7651916cd43dd8448eb211c80319c",
      depth: 1,
      decision: { effect: "allow", policies: ["p1"], policySet: "0".repeat(64) },
      labels: [],
    };
    entries.push({ seq, data: encode(event) });
  }
  return entries;
}

/** Rebuild from the log into a fresh store with durable commits, as the service runs. */
async function rebuild(say: (line: string) => void, dir: string): Promise<MemoryResults["rebuild"]> {
  const keys = new NamespaceKeys(join(dir, "keys"));
  say(`memory rebuild: writing a ${REBUILD_RECORDS}-write log (sealed values)`);
  const entries = memoryLog(keys, REBUILD_RECORDS);
  say(`memory rebuild: ${REBUILD_RECORDS} writes from the log into a fresh store`);
  const store = openMemoryStore({ path: join(dir, "store") });
  try {
    const report = await rebuildFromLog({ store, keys, entries });
    if (report.applied !== REBUILD_RECORDS || report.refused !== 0) throw new Error(`memory rebuild: expected ${REBUILD_RECORDS} writes applied, got ${JSON.stringify(report)}`);
    return { shape: REBUILD_SHAPE, records: report.applied, logEntries: report.read, ms: report.ms, recordsPerSec: report.applied / (report.ms / 1000) };
  } finally {
    await store.close();
  }
}

/** Runs every memory measurement; scratch stores live under `deps.dir` and are removed. */
export async function measureMemory(say: (line: string) => void, deps: MemoryBenchDeps): Promise<MemoryResults> {
  const started = performance.now();
  const scratch = join(deps.dir, "bench-memory");
  mkdirSync(scratch, { recursive: true });
  try {
    const kernel = await throughKernel(say, deps);
    const lmdb = await rawLmdb(say, join(scratch, "raw-lmdb"));
    const searchFigures = await search(say, join(scratch, "search"));
    const rebuildFigures = await rebuild(say, join(scratch, "rebuild"));
    return { kernel, lmdb, search: searchFigures, rebuild: rebuildFigures, durationMs: performance.now() - started };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The memory section of the benchmark table; `requestReplyP50` is the kernel-mediated request-reply p50 of the same run. */
export function memoryRows(m: MemoryResults, requestReplyP50: number): { rows: Row[]; ratios: Record<string, unknown> } {
  const get = m.kernel.get.latency;
  const put = m.kernel.put.latency;
  const getVsRequestReply = get.p50 / requestReplyP50;
  const largest = m.search.sizes.find((s) => s.records === 100_000);
  const vector100k = largest?.vector.p50 ?? Number.NaN;
  const rebuildRate = m.rebuild.recordsPerSec;
  const rows: Row[] = [
    { section: "memory (agent ctx.memory -> kernel -> memory service -> LMDB; raw LMDB on its own)" },
    { name: "raw LMDB put p50 (durable commit)", value: m.lmdb.put.latency.p50, unit: "ms" },
    { name: "raw LMDB get p50", value: m.lmdb.get.latency.p50, unit: "ms" },
    { name: "put p50 through the kernel (vs raw LMDB put)", value: put.p50, unit: "ms", ratio: put.p50 / m.lmdb.put.latency.p50 },
    { name: "put p99 through the kernel", value: put.p99, unit: "ms" },
    { name: "get p50 through the kernel (vs raw LMDB get)", value: get.p50, unit: "ms", ratio: get.p50 / m.lmdb.get.latency.p50 },
    {
      name: "get p50 through the kernel (vs kernel request-reply p50)",
      value: get.p50,
      unit: "ms",
      ratio: getVsRequestReply,
      target: `ratio <= ${MEMORY_TARGETS.getVsRequestReplyMax}`,
      pass: getVsRequestReply <= MEMORY_TARGETS.getVsRequestReplyMax,
    },
    { name: "get p99 through the kernel", value: get.p99, unit: "ms" },
    { name: "memory service start to ready (reads the log first)", value: m.kernel.serviceReadyMs, unit: "ms" },
    { section: `memory search (store library, top-10, ${m.search.words}-word records with ${m.search.dimension}-dim vectors)` },
  ];
  for (const s of m.search.sizes) {
    const big = s.records === 100_000;
    rows.push(
      {
        name: `vector p50 over ${s.records.toLocaleString("en-US")}`,
        value: s.vector.p50,
        unit: "ms",
        ...(big ? { target: `<= ${MEMORY_TARGETS.vectorTop10Over100kMsMax}`, pass: s.vector.p50 <= MEMORY_TARGETS.vectorTop10Over100kMsMax } : {}),
      },
      { name: `  vector p99 over ${s.records.toLocaleString("en-US")}`, value: s.vector.p99, unit: "ms" },
      { name: `  first vector query (loads ${s.records.toLocaleString("en-US")} vectors)`, value: s.vectorFirstMs, unit: "ms" },
      { name: `full-text (BM25, 3-word queries) p50 over ${s.records.toLocaleString("en-US")}`, value: s.text.p50, unit: "ms" },
      { name: `hybrid p50 over ${s.records.toLocaleString("en-US")}`, value: s.hybrid.p50, unit: "ms" },
      { name: `  records written/s (batches of ${FILL_BATCH.toLocaleString("en-US")})`, value: s.fillPerSec, unit: "records/s" },
    );
  }
  rows.push(
    { section: "memory rebuild from the log (sealed values, durable commits)" },
    {
      name: `rebuild, ${m.rebuild.records.toLocaleString("en-US")} writes (8-word values)`,
      value: rebuildRate,
      unit: "records/s",
      target: `>= ${MEMORY_TARGETS.rebuildRecordsPerSecMin}`,
      pass: rebuildRate >= MEMORY_TARGETS.rebuildRecordsPerSecMin,
    },
  );
  return {
    rows,
    ratios: {
      memoryGet: {
        name: "memory get p50 through the kernel / kernel request-reply p50",
        value: getVsRequestReply,
        target: `<= ${MEMORY_TARGETS.getVsRequestReplyMax}`,
        pass: getVsRequestReply <= MEMORY_TARGETS.getVsRequestReplyMax,
      },
      memoryVectorSearch: {
        name: "vector top-10 over 100k x 384 p50 (ms)",
        value: vector100k,
        target: `<= ${MEMORY_TARGETS.vectorTop10Over100kMsMax}`,
        pass: vector100k <= MEMORY_TARGETS.vectorTop10Over100kMsMax,
      },
      memoryRebuild: {
        name: "memory rebuild from the log (records/s)",
        value: rebuildRate,
        target: `>= ${MEMORY_TARGETS.rebuildRecordsPerSecMin}`,
        pass: rebuildRate >= MEMORY_TARGETS.rebuildRecordsPerSecMin,
      },
    },
  };
}
