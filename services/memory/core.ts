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
  POSTING_ROW,
  POSTING_ROW_MAX,
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
  type Posting,
  type RecordRow,
} from "./layout.js";
import type { NamespaceId } from "../../src/memory/namespace.js";
import type { MemoryRecord, RecordKind } from "../../src/memory/record.js";
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

/** A posting row read or changed by the current write. */
interface CachedRow {
  key: [NamespaceId, string, number];
  chunk: PostingChunk;
  dirty: boolean;
}

/** State of one write while its body runs. */
export class WriteTx {
  readonly deltas: VectorDelta[] = [];
  private readonly metas = new Map<NamespaceId, NamespaceMeta>();
  /**
   * Posting rows read or changed by this write, per term (`ns \0 term`), by first version: a
   * batch touching one row many times writes it once, when the body returns.
   */
  private readonly rows = new Map<string, Map<number, CachedRow>>();
  /** First version of each term's last row (null: the term has no row), once looked up. */
  private readonly tails = new Map<string, number | null>();
  /** Postings of new records not yet placed into rows: [version, tf, length] triples per term. */
  private readonly pending = new Map<string, { ns: NamespaceId; term: string; postings: number[] }>();
  appliedSeq: number | undefined;
  /** See {@link StoreCore.resumeSeq}. */
  resumeSeq: number | undefined;

  constructor(private readonly core: StoreCore) {}

  /** Namespaces that had no indexed document when this write first read their meta. */
  private readonly unindexed = new Set<NamespaceId>();

  /** The namespace's meta, read once per write and written back when the body returns. */
  meta(ns: NamespaceId): NamespaceMeta {
    let meta = this.metas.get(ns);
    if (meta === undefined) {
      meta = this.core.meta(ns);
      this.metas.set(ns, meta);
      if (meta.docs === 0) this.unindexed.add(ns);
    }
    return meta;
  }

  /**
   * Adds a posting of `term`. A version above every version the namespace has indexed (every
   * new record's) is only queued here, as three numbers, and placed into rows once per write
   * (see {@link placePending}): what makes a batch of thousands of records cheap per record.
   */
  addPosting(ns: NamespaceId, term: string, posting: Posting, isNewest: boolean): void {
    const id = `${ns}\u0000${term}`;
    if (isNewest) {
      let queued = this.pending.get(id);
      if (queued === undefined) {
        queued = { ns, term, postings: [] };
        this.pending.set(id, queued);
      }
      queued.postings.push(posting.version, posting.tf, posting.length);
      return;
    }
    this.placePending(id);
    this.insertPosting(id, ns, term, posting);
  }

  /** Places a term's queued postings into its rows (appending; a full row gets a successor). */
  private placePending(id: string): void {
    const queued = this.pending.get(id);
    if (queued === undefined) return;
    this.pending.delete(id);
    const { ns, term, postings } = queued;
    for (let i = 0; i < postings.length; i += 3) {
      this.insertPosting(id, ns, term, { version: postings[i] as number, tf: postings[i + 1] as number, length: postings[i + 2] as number });
    }
  }

  private insertPosting(id: string, ns: NamespaceId, term: string, posting: Posting): void {
    let tail = this.tails.get(id);
    if (tail === undefined) {
      // A namespace without documents has no posting rows; one whose rows were all created while
      // the store remembered them has none but those remembered (a rebuild seeks nothing).
      tail = this.core.tails.get(id) ?? (this.unindexed.has(ns) || this.core.allTailsKnown(ns) ? null : this.lastRowStart(ns, term));
      this.tails.set(id, tail);
    }
    if (tail === null) {
      this.newRow(id, ns, term, posting.version).chunk.insert(posting);
      this.tails.set(id, posting.version);
      return;
    }
    const last = this.row(id, ns, term, tail);
    if (posting.version > last.chunk.last()) {
      if (last.chunk.size < POSTING_ROW) {
        last.chunk.insert(posting);
        last.dirty = true;
      } else {
        this.newRow(id, ns, term, posting.version).chunk.insert(posting);
        this.tails.set(id, posting.version);
      }
      return;
    }
    // Below the last row (an import out of order): the row whose range holds the version, or,
    // below every row, the first row, which then starts at this version.
    let first = this.rowStartFor(id, ns, term, posting.version);
    if (first === undefined) {
      const next = this.nextRowStart(id, ns, term, posting.version);
      if (next !== undefined) {
        this.rekey(id, ns, term, next, posting.version);
        first = posting.version;
      }
    }
    const row = first === undefined ? this.newRow(id, ns, term, posting.version) : this.row(id, ns, term, first);
    row.chunk.insert(posting);
    row.dirty = true;
    if (row.chunk.size > POSTING_ROW_MAX) {
      const upper = row.chunk.splitUpper();
      const created = this.newRow(id, ns, term, upper.first);
      created.chunk = upper.chunk;
      if (this.tails.get(id) === row.key[2]) this.tails.set(id, upper.first);
    }
  }

  /** Removes `version`'s posting of `term`, if there is one. */
  removePosting(ns: NamespaceId, term: string, version: number): void {
    const id = `${ns}\u0000${term}`;
    this.placePending(id);
    const first = this.rowStartFor(id, ns, term, version);
    if (first === undefined) return;
    const row = this.row(id, ns, term, first);
    // An emptied row stays (as the container of its range) until the write ends.
    if (row.chunk.remove(version)) row.dirty = true;
  }

  private cached(id: string): Map<number, CachedRow> {
    let byFirst = this.rows.get(id);
    if (byFirst === undefined) {
      byFirst = new Map();
      this.rows.set(id, byFirst);
    }
    return byFirst;
  }

  private row(id: string, ns: NamespaceId, term: string, first: number): CachedRow {
    const byFirst = this.cached(id);
    let row = byFirst.get(first);
    if (row === undefined) {
      const key = postingKey(ns, term, first);
      // A view into lmdb-js's shared read buffer, valid until the next read, whose `length` is
      // set to the value's size but whose real extent is the whole buffer: cut it, then copy it.
      const stored = this.core.tables.postings.getBinaryFast(key);
      row = { key, chunk: new PostingChunk(stored === undefined ? undefined : stored.subarray(0, stored.length)), dirty: false };
      byFirst.set(first, row);
    }
    return row;
  }

  private newRow(id: string, ns: NamespaceId, term: string, first: number): CachedRow {
    const row: CachedRow = { key: postingKey(ns, term, first), chunk: new PostingChunk(undefined), dirty: true };
    this.cached(id).set(first, row);
    return row;
  }

  /** First version of the term's last stored row, or null when it has none. */
  private lastRowStart(ns: NamespaceId, term: string): number | null {
    for (const key of this.core.tables.postings.getKeys({ start: postingKey(ns, term, Number.MAX_SAFE_INTEGER), end: [ns, term], reverse: true, limit: 1 })) {
      return (key as [NamespaceId, string, number])[2];
    }
    return null;
  }

  /** First version of the term's first row above `version` (stored or created by this write). */
  private nextRowStart(id: string, ns: NamespaceId, term: string, version: number): number | undefined {
    let best: number | undefined;
    for (const key of this.core.tables.postings.getKeys({ start: postingKey(ns, term, version), end: postingKey(ns, term, Number.MAX_SAFE_INTEGER), limit: 1 })) {
      best = (key as [NamespaceId, string, number])[2];
    }
    const byFirst = this.rows.get(id);
    if (byFirst !== undefined) {
      for (const first of byFirst.keys()) if (first > version && (best === undefined || first < best)) best = first;
    }
    return best;
  }

  /** Moves a row to a lower first version (nothing lies between the two). */
  private rekey(id: string, ns: NamespaceId, term: string, from: number, to: number): void {
    const old = this.row(id, ns, term, from);
    const moved = this.newRow(id, ns, term, to);
    moved.chunk = old.chunk;
    // Gone at once, not at the end of the write: later lookups in this write must not find it.
    this.core.tables.postings.removeSync(old.key);
    this.cached(id).delete(from);
    if (this.tails.get(id) === from) this.tails.set(id, to);
  }

  /** First version of the row whose range holds `version` (stored or created by this write). */
  private rowStartFor(id: string, ns: NamespaceId, term: string, version: number): number | undefined {
    let best: number | undefined;
    for (const key of this.core.tables.postings.getKeys({ start: postingKey(ns, term, version), end: [ns, term], reverse: true, limit: 1 })) {
      best = (key as [NamespaceId, string, number])[2];
    }
    const byFirst = this.rows.get(id);
    if (byFirst !== undefined) {
      for (const first of byFirst.keys()) if (first <= version && (best === undefined || first > best)) best = first;
    }
    return best;
  }

  /** Writes back what the body changed (called by {@link StoreCore.write}). */
  flush(): void {
    const t = this.core.tables;
    // Rows in key order: LMDB writes neighbouring pages, and the order does not depend on Map history.
    for (const id of [...this.pending.keys()].sort()) this.placePending(id);
    for (const [id, byFirst] of this.rows) {
      for (const { key, chunk, dirty } of byFirst.values()) {
        if (!dirty) continue;
        if (chunk.size === 0) {
          t.postings.removeSync(key);
          // The term's last row may be gone: look it up again next time.
          this.tails.delete(id);
          this.core.tails.delete(id);
        } else {
          t.postings.putSync(key, chunk.bytes());
        }
      }
    }
    this.core.rememberTails(this.tails, this.unindexed);
    for (const [ns, meta] of this.metas) t.meta.putSync(ns, encodeMeta(meta));
    if (this.appliedSeq !== undefined && this.appliedSeq > this.core.appliedSeq()) {
      t.store.putSync("appliedSeq", pack(this.appliedSeq));
    }
    if (this.resumeSeq !== undefined && this.resumeSeq > this.core.resumeSeq()) {
      t.store.putSync("resumeSeq", pack(this.resumeSeq));
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
  effects: Database<Bytes, number>;
  store: Database<Bytes, string>;
}

/** Most terms whose last posting row the store remembers between writes. */
const MAX_REMEMBERED_TAILS = 500_000;

export class StoreCore {
  readonly tables: Tables;
  readonly vectors: VectorIndex;
  /**
   * First version of each term's last posting row (`ns \0 term`), as of the last write body that
   * ran: saves a reverse seek per term per write. Updated at the end of each write body, inside
   * its transaction, so the next body (in the same batched commit or a later one) sees it; a
   * failed commit clears it.
   */
  readonly tails = new Map<string, number | null>();
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
      effects: env.openDB<Bytes, number>(Table.Effects, binary),
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
      // The body may have run and remembered rows that were then not committed.
      this.forgetTails();
      throw MaxwellError.from(err);
    }
  }

  /**
   * Namespaces all of whose posting rows were created while {@link tails} remembered them: a
   * term missing from `tails` has no row there. (Forgetting a row only costs a smaller row: a
   * new record's version is above every version indexed, so it may always start a new row.)
   */
  private readonly complete = new Set<NamespaceId>();

  allTailsKnown(ns: NamespaceId): boolean {
    return this.complete.has(ns);
  }

  /** Keeps what a write body learned about terms' last rows (see {@link tails}). */
  rememberTails(tails: ReadonlyMap<string, number | null>, unindexed: ReadonlySet<NamespaceId>): void {
    if (this.tails.size + tails.size > MAX_REMEMBERED_TAILS) this.forgetTails();
    for (const [id, first] of tails) this.tails.set(id, first);
    for (const ns of unindexed) this.complete.add(ns);
  }

  forgetTails(): void {
    this.tails.clear();
    this.complete.clear();
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

  /**
   * Where catching up with the log must start reading: every logged write at or below this
   * sequence is known to be applied (0 when none). Lags {@link appliedSeq}: writes to different
   * namespaces may arrive out of log order, so one above it may be applied while one below it
   * is still on its way.
   */
  resumeSeq(): number {
    const bytes = this.tables.store.get("resumeSeq");
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
      const newest = row.version === tx.meta(ns).revision;
      for (const [term, tf] of terms) tx.addPosting(ns, term, { version: row.version, tf, length }, newest);
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
      for (const [term] of doc.terms) tx.removePosting(ns, term, row.version);
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
