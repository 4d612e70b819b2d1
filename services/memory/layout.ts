/**
 * The on-disk layout of a memory store: the LMDB sub-databases, the shape of their keys and the
 * encoding of their rows. Everything that knows a byte offset or a key tuple lives here, so the
 * store, the indexes, the digest and compaction cannot disagree about the format.
 *
 * One LMDB environment, sub-databases (values are msgpack with the wire's options unless noted):
 *
 * | table      | key                                  | value                                          |
 * | ---------- | ------------------------------------ | ---------------------------------------------- |
 * | `records`  | [namespace, kind, key]               | {@link RecordRow}                              |
 * | `expiry`   | [expiresAt, namespace, kind, key]    | empty: the TTL queue compaction drains         |
 * | `docs`     | [namespace, version]                 | {@link DocRow}: what full-text search indexed   |
 * | `postings` | [namespace, term, first version]     | a posting row (see {@link POSTING_ROW})        |
 * | `vectors`  | [namespace, version]                 | {@link VectorRow}: u32 LE count, float32 LE values, msgpack meta |
 * | `meta`     | namespace                            | {@link NamespaceMeta}                          |
 * | `effects`  | log sequence                         | {@link EffectRow}: what applying a logged write did |
 * | `store`    | name                                 | store-wide facts (format, applied log seqs)    |
 *
 * Keys use lmdb-js's ordered-binary tuples: the namespace comes first, so one namespace is one
 * contiguous range, and `[ns]` .. `[ns + "\u0001"]` covers it exactly (namespaces hold no control
 * characters). Indexes are keyed by version because versions are unique within a namespace and
 * never reused: an update removes the old version's index rows and adds the new one's.
 *
 * Postings are stored in rows of up to {@link POSTING_ROW} postings of one term, keyed by the
 * lowest version the row may hold: row `[ns, term, first]` holds versions from `first` up to (not
 * including) the next row's `first`, sorted, 16 bytes each (version as two u32 BE, term frequency
 * u32 BE, document length u32 BE). A new record always takes the namespace's next version, the
 * highest so far, so a write appends to the term's last row (one small row per term, found by one
 * reverse seek) and starts a new row when that one is full. A term in every one of 100k documents
 * is ~800 rows; a term in 3 documents is one row, not three: a rebuild writing 100k records
 * touches a few rows per record instead of one per term. Inserts below the last row (imports,
 * which sort by version first, so rarely) go to the row whose range holds the version, which
 * splits in two once it passes {@link POSTING_ROW_MAX}.
 */
import { Packr } from "msgpackr";
import type { NamespaceId } from "../../src/memory/namespace.js";
import type { MemoryRecord, RecordKind } from "../../src/memory/record.js";

/** Bump when a stored shape or the tokenizer changes; a store of another format is rebuilt. */
export const STORE_FORMAT = 2;

/** Sub-database names. */
export const Table = {
  Records: "records",
  Expiry: "expiry",
  Docs: "docs",
  Postings: "postings",
  Vectors: "vectors",
  Meta: "meta",
  Effects: "effects",
  Store: "store",
} as const;
export type Table = (typeof Table)[keyof typeof Table];

/** A key of the `records` table. */
export type RecordKey = [NamespaceId, RecordKind, string];

/**
 * A stored record, without what its key already says. Field order is fixed by the code that
 * builds rows (the digest depends on it).
 */
export type RecordRow = Omit<MemoryRecord, "namespace" | "kind" | "key" | "vector"> & {
  /** Whether a vector is stored for this version. */
  vector: boolean;
};

/** What full-text search keeps per indexed record: enough to filter without the record. */
export interface DocRow {
  kind: RecordKind;
  key: string;
  at: number;
  expiresAt: number | null;
  tags: string[];
  /** Document length in terms. */
  length: number;
  /** Term frequencies, sorted by term: the postings to remove when this version goes. */
  terms: [string, number][];
}

/** A stored vector with what vector search filters on. */
export interface VectorRow {
  kind: RecordKind;
  key: string;
  at: number;
  expiresAt: number | null;
  tags: string[];
  /** The caller's vector at float32 precision (not normalized). */
  vector: Float32Array;
}

/**
 * What applying one logged memory write did (table `effects`, keyed by the event's log
 * sequence): a repeated call for the same effect is answered from it instead of applied again.
 */
export interface EffectRow {
  /** Id of the `effect.started` event. */
  effect: string;
  op: string;
  namespace: string;
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string; detail?: Record<string, unknown> };
}

export function encodeEffectRow(row: EffectRow): Uint8Array {
  return pack(row);
}

export function decodeEffectRow(bytes: Uint8Array): EffectRow {
  return unpack(bytes) as EffectRow;
}

/** Per-namespace facts. */
export interface NamespaceMeta {
  /** Last version handed out; every write takes the next one. */
  revision: number;
  /** Vector dimension, fixed by the first vector written. */
  dimension?: number;
  /** Documents in the full-text index and their total length (BM25 statistics). */
  docs: number;
  terms: number;
}

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: "number" });

export function pack(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function unpack(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

export function recordKey(ns: NamespaceId, kind: RecordKind, key: string): RecordKey {
  return [ns, kind, key];
}

/** Range options covering every key that starts with `prefix` (a tuple of one or two parts). */
export function prefixRange(...prefix: [NamespaceId] | [NamespaceId, string]): { start: string[]; end: string[] } {
  const last = prefix[prefix.length - 1] as string;
  return { start: [...prefix], end: [...prefix.slice(0, -1), `${last}\u0001`] };
}

export function versionKey(ns: NamespaceId, version: number): [NamespaceId, number] {
  return [ns, version];
}

export function expiryKey(expiresAt: number, ns: NamespaceId, kind: RecordKind, key: string): [number, NamespaceId, RecordKind, string] {
  return [expiresAt, ns, kind, key];
}

export function encodeRecordRow(row: RecordRow): Uint8Array {
  const ordered: Record<string, unknown> = { version: row.version, at: row.at };
  if (row.expiresAt !== undefined) ordered["expiresAt"] = row.expiresAt;
  ordered["tags"] = row.tags;
  if (row.text !== undefined) ordered["text"] = row.text;
  ordered["value"] = row.value;
  ordered["provenance"] = {
    writer: row.provenance.writer,
    principal: row.provenance.principal,
    causedBy: row.provenance.causedBy,
    labels: row.provenance.labels,
  };
  ordered["vector"] = row.vector;
  return pack(ordered);
}

export function decodeRecordRow(bytes: Uint8Array): RecordRow {
  return unpack(bytes) as RecordRow;
}

export function encodeDocRow(row: DocRow): Uint8Array {
  return pack([row.kind, row.key, row.at, row.expiresAt, row.tags, row.length, row.terms]);
}

export function decodeDocRow(bytes: Uint8Array): DocRow {
  const [kind, key, at, expiresAt, tags, length, terms] = unpack(bytes) as [RecordKind, string, number, number | null, string[], number, [string, number][]];
  return { kind, key, at, expiresAt, tags, length, terms };
}

/** Whether this machine stores floats little-endian (as the vectors table does). */
export const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Float32 values as little-endian bytes. */
export function float32Bytes(vector: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(vector.buffer.slice(vector.byteOffset, vector.byteOffset + vector.byteLength));
  const out = new Uint8Array(vector.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i] as number, true);
  return out;
}

/** Little-endian float32 bytes as a Float32Array (a copy). */
export function bytesFloat32(bytes: Uint8Array): Float32Array {
  const length = bytes.length >>> 2;
  if (LITTLE_ENDIAN) {
    const copy = new Uint8Array(length * 4);
    copy.set(bytes.subarray(0, length * 4));
    return new Float32Array(copy.buffer);
  }
  const out = new Float32Array(length);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** A vector row's parts, as views into its bytes (no copy). */
export interface VectorRowParts {
  /** The float32 values, little-endian. */
  floats: Uint8Array;
  /** msgpack [kind, key, at, expiresAt, tags]. */
  meta: Uint8Array;
}

export function encodeVectorRow(row: VectorRow): Uint8Array {
  const floats = float32Bytes(row.vector);
  const meta = pack([row.kind, row.key, row.at, row.expiresAt, row.tags]);
  const out = new Uint8Array(4 + floats.length + meta.length);
  new DataView(out.buffer).setUint32(0, row.vector.length, true);
  out.set(floats, 4);
  out.set(meta, 4 + floats.length);
  return out;
}

export function splitVectorRow(bytes: Uint8Array): VectorRowParts {
  const count = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  return { floats: bytes.subarray(4, 4 + count * 4), meta: bytes.subarray(4 + count * 4) };
}

export function decodeVectorMeta(meta: Uint8Array): Omit<VectorRow, "vector"> {
  const [kind, key, at, expiresAt, tags] = unpack(meta) as [RecordKind, string, number, number | null, string[]];
  return { kind, key, at, expiresAt, tags };
}

export function decodeVectorRow(bytes: Uint8Array): VectorRow {
  const { floats, meta } = splitVectorRow(bytes);
  return { ...decodeVectorMeta(meta), vector: bytesFloat32(floats) };
}

/** Postings per row when appending: a row that is full gets a successor. */
export const POSTING_ROW = 128;
/** A row that grows past this by inserts below the last row is split in two. */
export const POSTING_ROW_MAX = 2 * POSTING_ROW;
/** Bytes per posting inside a row. */
export const POSTING_BYTES = 16;

/** A posting: which version of which document holds the term, how often, and its length. */
export interface Posting {
  version: number;
  tf: number;
  length: number;
}

/** The key of the posting row of `term` whose range starts at version `first`. */
export function postingKey(ns: NamespaceId, term: string, first: number): [NamespaceId, string, number] {
  return [ns, term, first];
}

function postingVersion(view: DataView, offset: number): number {
  return view.getUint32(offset) * 0x1_0000_0000 + view.getUint32(offset + 4);
}

/** Index of the first posting in `chunk` whose version is ≥ `version`. */
function seek(view: DataView, count: number, version: number): number {
  let lo = 0;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (postingVersion(view, mid * POSTING_BYTES) < version) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A posting row being changed: postings sorted by version in a buffer with spare room, so a
 * write that adds many postings to one row (a batch, a rebuild) does not copy it each time.
 */
export class PostingChunk {
  private buffer: Uint8Array;
  private view: DataView;
  private count: number;

  constructor(stored: Uint8Array | undefined) {
    this.count = stored === undefined ? 0 : stored.length / POSTING_BYTES;
    this.buffer = new Uint8Array(Math.max(4, this.count) * POSTING_BYTES);
    if (stored !== undefined) this.buffer.set(stored);
    this.view = new DataView(this.buffer.buffer);
  }

  get size(): number {
    return this.count;
  }

  /** The highest version in the row, or -1 when it is empty. */
  last(): number {
    return this.count === 0 ? -1 : postingVersion(this.view, (this.count - 1) * POSTING_BYTES);
  }

  /** Moves the upper half of the postings into a new row; returns it with its first version. */
  splitUpper(): { first: number; chunk: PostingChunk } {
    const keep = this.count >> 1;
    const upper = new PostingChunk(this.buffer.slice(keep * POSTING_BYTES, this.count * POSTING_BYTES));
    const first = postingVersion(this.view, keep * POSTING_BYTES);
    this.count = keep;
    return { first, chunk: upper };
  }

  /** Adds `p` in version order; an existing posting of that version is replaced. */
  insert(p: Posting): void {
    const i = seek(this.view, this.count, p.version);
    const at = i * POSTING_BYTES;
    if (!(i < this.count && postingVersion(this.view, at) === p.version)) {
      if ((this.count + 1) * POSTING_BYTES > this.buffer.length) {
        const grown = new Uint8Array(this.buffer.length * 2);
        grown.set(this.buffer);
        this.buffer = grown;
        this.view = new DataView(grown.buffer);
      }
      this.buffer.copyWithin(at + POSTING_BYTES, at, this.count * POSTING_BYTES);
      this.count++;
    }
    this.view.setUint32(at, Math.floor(p.version / 0x1_0000_0000));
    this.view.setUint32(at + 4, p.version >>> 0);
    this.view.setUint32(at + 8, p.tf);
    this.view.setUint32(at + 12, p.length);
  }

  /** Removes `version`'s posting; whether there was one. */
  remove(version: number): boolean {
    const i = seek(this.view, this.count, version);
    if (i >= this.count || postingVersion(this.view, i * POSTING_BYTES) !== version) return false;
    this.buffer.copyWithin(i * POSTING_BYTES, (i + 1) * POSTING_BYTES, this.count * POSTING_BYTES);
    this.count--;
    return true;
  }

  /** The chunk as stored. */
  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.count * POSTING_BYTES);
  }
}

/** Calls `visit` for each posting in a chunk, without allocating per posting. */
export function forEachPosting(chunk: Uint8Array, visit: (version: number, tf: number, length: number) => void): void {
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length);
  for (let at = 0; at < chunk.length; at += POSTING_BYTES) {
    visit(postingVersion(view, at), view.getUint32(at + 8), view.getUint32(at + 12));
  }
}

export function encodeMeta(meta: NamespaceMeta): Uint8Array {
  const ordered: Record<string, unknown> = { revision: meta.revision };
  if (meta.dimension !== undefined) ordered["dimension"] = meta.dimension;
  ordered["docs"] = meta.docs;
  ordered["terms"] = meta.terms;
  return pack(ordered);
}

export function decodeMeta(bytes: Uint8Array | undefined): NamespaceMeta {
  if (bytes === undefined) return { revision: 0, docs: 0, terms: 0 };
  return unpack(bytes) as NamespaceMeta;
}

/** Empty value, for index rows whose key says everything. */
export const EMPTY = new Uint8Array(0);
