/**
 * The in-memory side of vector search. LMDB holds every vector (table `vectors`); this keeps,
 * per namespace, the same vectors normalized to unit length in one contiguous float32 matrix
 * inside a WebAssembly memory, so a query is one pass of the SIMD kernel (cosine similarity =
 * dot product of unit vectors) and a top-k selection. Namespaces are loaded from LMDB the
 * first time they are searched and evicted least-recently-used, so memory follows what is
 * being searched, not everything ever stored. After each commit the store applies its changes
 * here in commit order (see core.ts); rows are keyed by version, and versions are never reused,
 * so applying a change twice is harmless.
 */
import { ErrorCode, MaxwellError } from "../../src/protocol/mod.js";
import type { NamespaceId } from "../../src/memory/namespace.js";
import type { RecordKind } from "../../src/memory/record.js";
import { LITTLE_ENDIAN, bytesFloat32, decodeVectorMeta } from "./layout.js";
import { LANES, scoresKernel, wasmMemory, type ScoresFn, type WasmMemory } from "./vector-kernel.js";

/** What search filters on and returns for one vector row. */
export interface VectorRowMeta {
  kind: RecordKind;
  key: string;
  version: number;
  at: number;
  expiresAt: number | null;
  tags: string[];
}

/** A change to apply after commit. */
export type VectorDelta =
  | { op: "add"; ns: NamespaceId; meta: VectorRowMeta; vector: Float32Array }
  | { op: "remove"; ns: NamespaceId; version: number }
  | { op: "drop"; ns: NamespaceId };

/** What the loader returns for a namespace that has a vector dimension. */
export interface LoadedNamespace {
  dimension: number;
  /** Rows as stored: the meta still msgpack-encoded, the vector as little-endian float32 bytes. */
  rows: Iterable<{ version: number; meta: Uint8Array; vector: Uint8Array }>;
}

const PAGE = 65_536;
const MAX_PAGES = 65_536;
const INITIAL_ROWS = 1024;

/** The vectors of one namespace, normalized, as rows of a matrix in WebAssembly memory. */
export class NamespaceVectors {
  readonly stride: number;
  private readonly memory: WasmMemory;
  private readonly kernel: ScoresFn;
  /** Views of the whole memory, renewed when it grows (growing detaches the old buffer). */
  private floats: Float32Array;
  private bytes: Uint8Array;
  private capacity: number;
  /** Per row: its version, and its meta (decoded on first use: most rows never rank). */
  private readonly versions: number[] = [];
  private readonly metas: (VectorRowMeta | Uint8Array)[] = [];
  private readonly rowOf = new Map<number, number>();

  constructor(readonly dimension: number) {
    this.stride = Math.ceil(dimension / LANES) * LANES;
    this.capacity = INITIAL_ROWS;
    this.memory = wasmMemory(Math.ceil(this.bytesFor(this.capacity) / PAGE), MAX_PAGES);
    this.kernel = scoresKernel(this.memory);
    this.floats = new Float32Array(this.memory.buffer);
    this.bytes = new Uint8Array(this.memory.buffer);
  }

  get count(): number {
    return this.versions.length;
  }

  /** Row `i`'s metadata. */
  meta(i: number): VectorRowMeta {
    const meta = this.metas[i] as VectorRowMeta | Uint8Array;
    if (!(meta instanceof Uint8Array)) return meta;
    const decoded: VectorRowMeta = { ...decodeVectorMeta(meta), version: this.versions[i] as number };
    this.metas[i] = decoded;
    return decoded;
  }

  has(version: number): boolean {
    return this.rowOf.has(version);
  }

  /**
   * Adds a row, normalized; a version already present is left as it is. `vector` is either the
   * values or their little-endian float32 bytes as stored; `meta` either decoded or as stored.
   */
  add(version: number, meta: VectorRowMeta | Uint8Array, vector: Float32Array | Uint8Array): void {
    if (this.rowOf.has(version)) return;
    if (vector instanceof Uint8Array && !LITTLE_ENDIAN) vector = bytesFloat32(vector);
    const length = vector instanceof Uint8Array ? vector.length / 4 : vector.length;
    if (length !== this.dimension) {
      throw new MaxwellError(ErrorCode.Internal, `vector of dimension ${length} in a namespace of dimension ${this.dimension}`);
    }
    this.reserve(this.versions.length + 1);
    const row = this.versions.length;
    const start = this.matrixOffset() / 4 + row * this.stride;
    if (vector instanceof Uint8Array) this.bytes.set(vector, start * 4);
    else this.floats.set(vector, start);
    normalize(this.floats, start, length, this.stride);
    this.versions.push(version);
    this.metas.push(meta);
    this.rowOf.set(version, row);
  }

  /** Removes a row by version (the last row moves into its place). */
  remove(version: number): void {
    const row = this.rowOf.get(version);
    if (row === undefined) return;
    const last = this.versions.length - 1;
    if (row !== last) {
      const base = this.matrixOffset() / 4;
      this.floats.copyWithin(base + row * this.stride, base + last * this.stride, base + (last + 1) * this.stride);
      const moved = this.versions[last] as number;
      this.versions[row] = moved;
      this.metas[row] = this.metas[last] as VectorRowMeta | Uint8Array;
      this.rowOf.set(moved, row);
    }
    this.versions.pop();
    this.metas.pop();
    this.rowOf.delete(version);
  }

  /**
   * Cosine similarity of the unit vector `query` (length = dimension) with every row, as a view
   * valid until the next change to this namespace.
   */
  scores(query: Float32Array): Float32Array {
    this.floats.set(query, 0);
    this.floats.fill(0, query.length, this.stride);
    const out = this.scoresOffset();
    this.kernel(this.matrixOffset(), 0, out, this.versions.length, this.stride);
    return this.floats.subarray(out / 4, out / 4 + this.versions.length);
  }

  /** Layout: [query: stride floats][matrix: capacity × stride floats][scores: capacity floats]. */
  private matrixOffset(): number {
    return this.stride * 4;
  }

  private scoresOffset(): number {
    return this.matrixOffset() + this.capacity * this.stride * 4;
  }

  private bytesFor(rows: number): number {
    return this.stride * 4 + rows * this.stride * 4 + rows * 4;
  }

  private reserve(rows: number): void {
    if (rows <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < rows) capacity *= 2;
    const pages = Math.ceil(this.bytesFor(capacity) / PAGE);
    const have = this.memory.buffer.byteLength / PAGE;
    if (pages > MAX_PAGES) {
      throw new MaxwellError(
        ErrorCode.Unavailable,
        `a namespace can hold at most ${Math.floor((MAX_PAGES * PAGE) / (this.stride * 4 + 4)) - 1} vectors of dimension ${this.dimension} in memory`,
      );
    }
    if (pages > have) {
      this.memory.grow(pages - have);
      this.floats = new Float32Array(this.memory.buffer);
      this.bytes = new Uint8Array(this.memory.buffer);
    }
    this.capacity = capacity;
  }
}

/** Scales floats[start, start + length) to unit length and zeroes the row's padding up to `stride`. */
function normalize(floats: Float32Array, start: number, length: number, stride: number): void {
  let norm = 0;
  for (let i = start; i < start + length; i++) {
    const x = floats[i] as number;
    norm += x * x;
  }
  const scale = 1 / Math.sqrt(norm);
  for (let i = start; i < start + length; i++) floats[i] = (floats[i] as number) * scale;
  floats.fill(0, start + length, start + stride);
}

/** Loaded namespaces, least recently used first out. */
export class VectorIndex {
  private readonly loaded = new Map<NamespaceId, NamespaceVectors>();

  constructor(
    private readonly load: (ns: NamespaceId) => LoadedNamespace | undefined,
    private readonly maxLoaded: number,
  ) {}

  /** The namespace's vectors, loading them on first use; undefined when it has none. */
  namespace(ns: NamespaceId): NamespaceVectors | undefined {
    const hit = this.loaded.get(ns);
    if (hit !== undefined) {
      this.loaded.delete(ns);
      this.loaded.set(ns, hit);
      return hit;
    }
    const source = this.load(ns);
    if (source === undefined) return undefined;
    const vectors = new NamespaceVectors(source.dimension);
    for (const { version, meta, vector } of source.rows) vectors.add(version, meta, vector);
    this.loaded.set(ns, vectors);
    for (const oldest of this.loaded.keys()) {
      if (this.loaded.size <= this.maxLoaded) break;
      if (oldest !== ns) this.loaded.delete(oldest);
    }
    return vectors;
  }

  /** Whether a namespace is in memory (for tests and metrics). */
  isLoaded(ns: NamespaceId): boolean {
    return this.loaded.has(ns);
  }

  /** Applies a committed change; namespaces not in memory pick it up when they load. */
  apply(delta: VectorDelta): void {
    const vectors = this.loaded.get(delta.ns);
    if (vectors === undefined) return;
    switch (delta.op) {
      case "add":
        vectors.add(delta.meta.version, delta.meta, delta.vector);
        break;
      case "remove":
        vectors.remove(delta.version);
        break;
      case "drop":
        this.loaded.delete(delta.ns);
        break;
    }
  }

  clear(): void {
    this.loaded.clear();
  }
}
