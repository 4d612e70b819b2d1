/**
 * The engine under the memory store: the LMDB environment, its tables, and the two mutation
 * primitives (insert a record version, remove one) that keep every index in step with the
 * records: TTL queue, full-text postings and statistics, vectors on disk and in memory. The
 * public operations (store.ts), compaction and import are written in terms of these, inside
 * {@link StoreCore.write}, so no code path can update a record and forget an index.
 *
 * Writes are lmdb-js child transactions: each runs atomically inside the next batched commit,
 * and one that throws (a CAS conflict, say) is rolled back without touching the others. The
 * in-memory vector index is updated only after a commit, strictly in commit order, so it never
 * shows data that was rolled back and never applies an older change after a newer one.
 */
import { open, type Database, type RootDatabase } from "lmdb";
import { ErrorCode, MaxwellError } from "../../src/protocol/mod.js";
import {
  EMPTY,
  STORE_FORMAT,
  PostingChunk,
  Table,
  decodeMeta,
  decodeRecordRow,
  decodeVectorRow,
  decodeDocRow,
  encodeDocRow,
  encodeMeta,
  encodeRecordRow,
  encodeVectorRow,
  expiryKey,
  pack,
  postingKey,
  prefixRange,
  recordKey,
  splitVectorRow,
  unpack,
  versionKey,
  type NamespaceMeta,
  type RecordRow,
} from "./layout.js";
import type { NamespaceId } from "./namespace.js";
import type { MemoryRecord, RecordKind } from "./record.js";
import { searchableText, termFrequencies } from "./tokenizer.js";
import { VectorIndex, type LoadedNamespace, type VectorDelta, type VectorRowMeta } from "./vector-index.js";

/** How to open a memory store. */
export interface StoreOptions {
  /** Directory of the LMDB environment; created when missing. */
  path: string;
  /**
   * The clock, ms since the epoch: decides TTL visibility and the default write time. Inject
   * one in tests; the memory service passes event times explicitly (`at`) so rebuilds match.
   */
  now?: () => number;
  /** Skip fsync on commit (tests, or a store that will be rebuilt from the log anyway). */
  noSync?: boolean;
  /** How many namespaces' vectors to keep in memory at once (least recently searched go first). */
  maxLoadedVectorNamespaces?: number;
}

type Bytes = Uint8Array;
// lmdb-js keys are ordered-binary tuples; its own Key type is not exported by name.
type Tuple = (string | number)[];

/** State of one write while its body runs. */
export class WriteTx {
  readonly deltas: VectorDelta[] = [];
  private readonly metas = new Map<NamespaceId, NamespaceMeta>();
  /** Posting chunks read or changed by this write: a batch touching one chunk many times writes it once. */
  private readonly chunks = new Map<string, { key: [NamespaceId, string, number]; chunk: PostingChunk | undefined; dirty: boolean }>();
  appliedSeq: number | undefined;

  constructor(private readonly core: StoreCore) {}

  /** The namespace's meta, read once per write and written back when the body returns. */
  meta(ns: NamespaceId): NamespaceMeta {
    let meta = this.metas.get(ns);
    if (meta === undefined) {
      meta = this.core.meta(ns);
      this.metas.set(ns, meta);
    }
    return meta;
  }

  /**
   * The posting chunk at `key`, to change; written back when the body returns. With `create`
   * false, undefined when there is none.
   */
  chunk(key: [NamespaceId, string, number], create: boolean): PostingChunk | undefined {
    const id = key.join("\u0000");
    let entry = this.chunks.get(id);
    if (entry === undefined) {
      const stored = this.core.tables.postings.get(key);
      entry = { key, chunk: stored === undefined ? undefined : new PostingChunk(stored), dirty: false };
      this.chunks.set(id, entry);
    }
    if (entry.chunk === undefined && create) entry.chunk = new PostingChunk(undefined);
    if (entry.chunk !== undefined) entry.dirty = true;
    return entry.chunk;
  }

  /** Writes back what the body changed (called by {@link StoreCore.write}). */
  flush(): void {
    const t = this.core.tables;
    for (const { key, chunk, dirty } of this.chunks.values()) {
      if (!dirty || chunk === undefined) continue;
      if (chunk.size === 0) t.postings.removeSync(key);
      else t.postings.putSync(key, chunk.bytes());
    }
    for (const [ns, meta] of this.metas) t.meta.putSync(ns, encodeMeta(meta));
    if (this.appliedSeq !== undefined && this.appliedSeq > this.core.appliedSeq()) {
      t.store.putSync("appliedSeq", pack(this.appliedSeq));
    }
  }
}

export interface Tables {
  records: Database<Bytes, Tuple>;
  expiry: Database<Bytes, Tuple>;
  docs: Database<Bytes, Tuple>;
  postings: Database<Bytes, Tuple>;
  vectors: Database<Bytes, Tuple>;
  meta: Database<Bytes, string>;
  store: Database<Bytes, string>;
}

export class StoreCore {
  readonly tables: Tables;
  readonly vectors: VectorIndex;
  private closed = false;
  /** Commit-order bookkeeping for vector deltas: tickets are taken in enqueue order. */
  private nextTicket = 0;
  private nextToApply = 0;
  private readonly settled = new Map<number, VectorDelta[]>();

  private constructor(
    readonly path: string,
    readonly env: RootDatabase<Bytes, string>,
    readonly now: () => number,
    maxLoaded: number,
  ) {
    const binary = { encoding: "binary" as const };
    this.tables = {
      records: env.openDB<Bytes, Tuple>(Table.Records, binary),
      expiry: env.openDB<Bytes, Tuple>(Table.Expiry, binary),
      docs: env.openDB<Bytes, Tuple>(Table.Docs, binary),
      postings: env.openDB<Bytes, Tuple>(Table.Postings, binary),
      vectors: env.openDB<Bytes, Tuple>(Table.Vectors, binary),
      meta: env.openDB<Bytes, string>(Table.Meta, binary),
      store: env.openDB<Bytes, string>(Table.Store, binary),
    };
    this.vectors = new VectorIndex((ns) => this.loadVectors(ns), maxLoaded);
  }

  static open(options: StoreOptions): StoreCore {
    let env: RootDatabase<Bytes, string>;
    try {
      env = open<Bytes, string>({ path: options.path, maxDbs: 12, noSync: options.noSync ?? false, encoding: "binary" });
    } catch (err) {
      throw new MaxwellError(ErrorCode.Unavailable, `cannot open the memory store at ${options.path}: ${(err as Error).message}`, { cause: err });
    }
    const core = new StoreCore(options.path, env, options.now ?? Date.now, options.maxLoadedVectorNamespaces ?? 64);
    const format = core.tables.store.get("format");
    if (format === undefined) {
      core.tables.store.putSync("format", pack(STORE_FORMAT));
    } else if (unpack(format) !== STORE_FORMAT) {
      void env.close();
      throw new MaxwellError(
        ErrorCode.Unavailable,
        `the memory store at ${options.path} has format ${String(unpack(format))}; this build reads format ${STORE_FORMAT}: rebuild it from the log`,
      );
    }
    return core;
  }

  assertOpen(): void {
    if (this.closed) throw new MaxwellError(ErrorCode.Unavailable, "the memory store is closed");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.vectors.clear();
    await this.env.close();
  }

  /**
   * Runs `body` atomically in the next batched commit and resolves after the commit. A body that
   * throws is rolled back, alone. Bodies run in the order `write` was called.
   */
  async write<T>(body: (tx: WriteTx) => T): Promise<T> {
    this.assertOpen();
    const ticket = this.nextTicket++;
    const tx = new WriteTx(this);
    try {
      const result = await this.env.childTransaction(() => {
        const value = body(tx);
        tx.flush();
        return value;
      });
      this.settle(ticket, tx.deltas);
      return result;
    } catch (err) {
      this.settle(ticket, []);
      throw MaxwellError.from(err);
    }
  }

  /** Applies committed deltas to the in-memory vector index in commit order. */
  private settle(ticket: number, deltas: VectorDelta[]): void {
    this.settled.set(ticket, deltas);
    for (;;) {
      const ready = this.settled.get(this.nextToApply);
      if (ready === undefined) return;
      this.settled.delete(this.nextToApply);
      this.nextToApply++;
      for (const delta of ready) {
        try {
          this.vectors.apply(delta);
        } catch {
          // A namespace that cannot take a change is dropped and reloaded from LMDB on next use.
          this.vectors.apply({ op: "drop", ns: delta.ns });
        }
      }
    }
  }

  /** The last log sequence a write recorded as applied (0 when none). */
  appliedSeq(): number {
    const bytes = this.tables.store.get("appliedSeq");
    return bytes === undefined ? 0 : (unpack(bytes) as number);
  }

  meta(ns: NamespaceId): NamespaceMeta {
    return decodeMeta(this.tables.meta.get(ns));
  }

  /** The stored row of a record, visible or not. */
  row(ns: NamespaceId, kind: RecordKind, key: string): RecordRow | undefined {
    const bytes = this.tables.records.get(recordKey(ns, kind, key));
    return bytes === undefined ? undefined : decodeRecordRow(bytes);
  }

  /** The stored vector of a record version. */
  vector(ns: NamespaceId, version: number): Float32Array | undefined {
    const bytes = this.tables.vectors.get(versionKey(ns, version));
    return bytes === undefined ? undefined : decodeVectorRow(bytes).vector;
  }

  /** A stored row as the record reads return. */
  toRecord(ns: NamespaceId, kind: RecordKind, key: string, row: RecordRow): MemoryRecord {
    const record: MemoryRecord = {
      namespace: ns,
      kind,
      key,
      version: row.version,
      at: row.at,
      ...(row.expiresAt !== undefined ? { expiresAt: row.expiresAt } : {}),
      tags: row.tags,
      ...(row.text !== undefined ? { text: row.text } : {}),
      value: row.value,
      provenance: row.provenance,
    };
    if (row.vector) {
      const vector = this.vector(ns, row.version);
      if (vector !== undefined) record.vector = Array.from(vector);
    }
    return record;
  }

  /**
   * Stores a record version with all its index rows. The caller has removed any previous
   * version of the same key and assigned `row.version` from the namespace revision.
   */
  insert(tx: WriteTx, ns: NamespaceId, kind: RecordKind, key: string, row: RecordRow, vector: Float32Array | undefined): void {
    const t = this.tables;
    t.records.putSync(recordKey(ns, kind, key), encodeRecordRow(row));
    if (row.expiresAt !== undefined) t.expiry.putSync(expiryKey(row.expiresAt, ns, kind, key), EMPTY);
    const { terms, length } = termFrequencies(searchableText(row.value, row.text));
    if (terms.length > 0) {
      const at = versionKey(ns, row.version);
      t.docs.putSync(at, encodeDocRow({ kind, key, at: row.at, expiresAt: row.expiresAt ?? null, tags: row.tags, length, terms }));
      for (const [term, tf] of terms) {
        tx.chunk(postingKey(ns, term, row.version), true)?.insert({ version: row.version, tf, length });
      }
      const meta = tx.meta(ns);
      meta.docs += 1;
      meta.terms += length;
    }
    if (vector !== undefined) {
      const meta: VectorRowMeta = { kind, key, version: row.version, at: row.at, expiresAt: row.expiresAt ?? null, tags: row.tags };
      t.vectors.putSync(versionKey(ns, row.version), encodeVectorRow({ ...meta, vector }));
      tx.deltas.push({ op: "add", ns, meta, vector });
    }
  }

  /** Removes a stored record version and all its index rows. */
  remove(tx: WriteTx, ns: NamespaceId, kind: RecordKind, key: string, row: RecordRow): void {
    const t = this.tables;
    t.records.removeSync(recordKey(ns, kind, key));
    if (row.expiresAt !== undefined) t.expiry.removeSync(expiryKey(row.expiresAt, ns, kind, key));
    const at = versionKey(ns, row.version);
    const docBytes = t.docs.get(at);
    if (docBytes !== undefined) {
      const doc = decodeDocRow(docBytes);
      for (const [term] of doc.terms) tx.chunk(postingKey(ns, term, row.version), false)?.remove(row.version);
      t.docs.removeSync(at);
      const meta = tx.meta(ns);
      meta.docs -= 1;
      meta.terms -= doc.length;
    }
    if (row.vector) {
      t.vectors.removeSync(at);
      tx.deltas.push({ op: "remove", ns, version: row.version });
    }
  }

  /** Every namespace that has a meta row, in order. */
  namespaces(): NamespaceId[] {
    return [...this.tables.meta.getKeys({})] as NamespaceId[];
  }

  /** Reads a namespace's vectors from one LMDB snapshot, for the in-memory index. */
  private loadVectors(ns: NamespaceId): LoadedNamespace | undefined {
    const transaction = this.env.useReadTransaction();
    let handedOff = false;
    try {
      const meta = decodeMeta(this.tables.meta.get(ns, { transaction }));
      if (meta.dimension === undefined) return undefined;
      const range = this.tables.vectors.getRange({ ...prefixRange(ns), transaction });
      handedOff = true;
      return {
        dimension: meta.dimension,
        rows: (function* () {
          try {
            for (const { key, value } of range) {
              const { floats, meta } = splitVectorRow(value);
              // The meta is decoded only for rows a query ranks (see vector-index.ts).
              yield { version: (key as Tuple)[1] as number, meta: meta.slice(), vector: floats };
            }
          } finally {
            transaction.done();
          }
        })(),
      };
    } finally {
      if (!handedOff) transaction.done();
    }
  }
}

/** Whether a record (or index row) with this expiry is visible at `now`. */
export function visible(expiresAt: number | null | undefined, now: number): boolean {
  return expiresAt === undefined || expiresAt === null || now < expiresAt;
}
