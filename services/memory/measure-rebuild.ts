/**
 * Measures how fast the memory store is rebuilt from the log on this machine; not a test (tests
 * never assert speed). Run:
 *
 *   node --import tsx services/memory/measure-rebuild.ts [records=100000]
 *
 * Builds a log in memory the way the kernel writes it (each memory write an `effect.started`
 * event, its value sealed under the namespace key, msgpack-encoded, one other event between
 * writes), then times {@link rebuildFromLog} into a fresh store (fsync on commit, as the service
 * runs) for several record shapes: everything a rebuild does per record is counted (decoding the
 * entry, opening the sealed value, validating, indexing, LMDB). Prints records/s per shape. The
 * issue's target is ≥ 100k records/s. Meant to move into bench/ with `npm run bench`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode } from "../../src/protocol/mod.js";
import { rebuildFromLog, type MemoryWriteEvent } from "./apply.js";
import { NamespaceKeys } from "../../src/memory/keys.js";
import { parseMemoryArgs } from "../../src/memory/ops.js";
import { sealMemoryArgs } from "../../src/memory/sealing.js";
import { openMemoryStore } from "./store.js";

const total = Number(process.argv[2] ?? 100_000);
const T0 = 1_767_225_600_000;

let seed = 42;
const random = (): number => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const vocabulary = Array.from({ length: 20_000 }, (_, i) => `w${i.toString(36)}`);
const word = (): string => vocabulary[Math.floor(random() ** 3 * vocabulary.length)] as string;
const sentence = (n: number): string => Array.from({ length: n }, word).join(" ");

interface Shape {
  label: string;
  words: number;
  dimension?: number;
  /** Fraction of writes that overwrite an existing key (a put on a key written before). */
  overwrite: number;
}

const shapes: Shape[] = [
  { label: "kv + episodes, 8-word values", words: 8, overwrite: 0.2 },
  { label: "kv + episodes, 30-word values", words: 30, overwrite: 0.2 },
  { label: "episodes, 8 words + 384-dim vector", words: 8, dimension: 384, overwrite: 0 },
];

function logOf(keys: NamespaceKeys, shape: Shape, count: number): { seq: number; data: Uint8Array }[] {
  const entries: { seq: number; data: Uint8Array }[] = [];
  const namespaces = Array.from({ length: 16 }, (_, i) => `agent:a${i}`);
  let seq = 0;
  for (let i = 0; i < count; i++) {
    seq++;
    entries.push({ seq, data: encode({ v: 1, seq, prev: "0".repeat(64), id: `m${seq}`, at: T0 + seq, type: "message", actor: "a0", principal: "p", body: "ping" }) });
    seq++;
    const ns = namespaces[i % namespaces.length] as string;
    const vector = shape.dimension === undefined ? undefined : Array.from({ length: shape.dimension }, () => random() - 0.5);
    const append = i % 2 === 1;
    const key = random() < shape.overwrite && i > 100 ? `k${Math.floor(random() * i)}` : `k${i}`;
    const op = append ? "append" : "put";
    const args = parseMemoryArgs(op, { ...(append ? {} : { key }), value: { text: sentence(shape.words), n: i }, ...(vector ? { vector } : {}) });
    const event: MemoryWriteEvent & { v: 1; prev: string; syscall: string; trace: string; depth: number; decision: unknown } = {
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

const dir = mkdtempSync(join(tmpdir(), "maxwell-memory-rebuild-"));
try {
  const keys = new NamespaceKeys(join(dir, "keys"));
  const rows: { label: string; records: number; ms: number; rate: number }[] = [];
  const only = process.env["SHAPE"] === undefined ? undefined : Number(process.env["SHAPE"]);
  for (const [i, shape] of shapes.entries()) {
    if (only !== undefined && i !== only) continue;
    const count = shape.dimension === undefined ? total : Math.min(total, 50_000);
    const entries = logOf(keys, shape, count);
    const store = openMemoryStore({ path: join(dir, `store-${i}`) });
    const report = await rebuildFromLog({ store, keys, entries, batchSize: Number(process.env["BATCH"] ?? 25_000) });
    await store.close();
    if (report.applied !== count || report.refused !== 0) throw new Error(`expected ${count} applied, got ${JSON.stringify(report)}`);
    rows.push({ label: shape.label, records: count, ms: report.ms, rate: count / (report.ms / 1000) });
    process.stderr.write(`· ${shape.label}: ${count} records in ${report.ms.toFixed(0)} ms\n`);
  }
  process.stdout.write(`\n${"rebuild from the log".padEnd(44)} ${"records".padStart(9)} ${"ms".padStart(8)} ${"records/s".padStart(10)}\n`);
  for (const r of rows) process.stdout.write(`${r.label.padEnd(44)} ${String(r.records).padStart(9)} ${r.ms.toFixed(0).padStart(8)} ${r.rate.toFixed(0).padStart(10)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
