/**
 * Search over memory: full text (BM25), vectors (cosine over caller-supplied embeddings) and a
 * hybrid of the two (reciprocal rank fusion), each filterable by namespace, tags, kind and
 * time.
 *
 * Isolation is structural. A search names the namespaces its caller may read (`permitted`,
 * from the kernel's decision) and may narrow them (`namespaces`, each of which must be
 * permitted, else `forbidden`). Only the searched namespaces' postings, statistics and vectors
 * are ever read, so a record anywhere else is never returned, never ranked, never counted, and
 * cannot change a score.
 */
import { ErrorCode, MaxwellError } from "../../src/protocol/mod.js";
import { visible, type StoreCore } from "./core.js";
import { parseNamespace, type NamespaceId } from "../../src/memory/namespace.js";
import {
  MemoryLimits,
  checkCount,
  checkKind,
  checkTags,
  checkTime,
  checkVector,
  type MemoryRecord,
  type RecordKind,
} from "../../src/memory/record.js";
import { bm25, indexedDoc } from "./text-index.js";
import { tokenize } from "./tokenizer.js";
import { TopK } from "./top-k.js";

/** Which records a search may consider. */
export interface SearchFilter {
  /** Namespaces the caller may read. Nothing outside them is read, ranked or counted. */
  permitted: readonly string[];
  /** Narrow the search to these namespaces; each must be permitted. Default: all permitted. */
  namespaces?: readonly string[];
  /** Only records carrying every one of these tags. */
  tags?: readonly string[];
  /** Only records of these kinds. Default: both. */
  kinds?: readonly RecordKind[];
  /** Only records written at or after this time (ms since the epoch). */
  from?: number;
  /** Only records written before this time (ms since the epoch). */
  to?: number;
  /** How many hits at most: 1-1000. */
  k: number;
}

export interface TextSearchRequest extends SearchFilter {
  query: string;
}

export interface VectorSearchRequest extends SearchFilter {
  vector: readonly number[] | Float32Array;
}

export interface HybridSearchRequest extends SearchFilter {
  query: string;
  vector: readonly number[] | Float32Array;
}

/** A component's view of a hit: its 1-based rank in that list and its score there. */
export interface ComponentRank {
  rank: number;
  score: number;
}

export interface SearchHit {
  record: MemoryRecord;
  /** BM25 (text), cosine similarity (vector) or fused reciprocal-rank score (hybrid). */
  score: number;
  /** Hybrid only: where the hit ranked in each list it appeared in. */
  text?: ComponentRank;
  vector?: ComponentRank;
}

/** Reciprocal rank fusion constant (Cormack et al. 2009). */
export const RRF_K = 60;

interface Scope {
  namespaces: NamespaceId[];
  k: number;
  accepts: (row: { kind: RecordKind; at: number; expiresAt: number | null; tags: string[] }) => boolean;
}

/** A ranked candidate before its record is read. */
interface Candidate {
  ns: NamespaceId;
  kind: RecordKind;
  key: string;
  version: number;
}

const byNamespaceThenNewest = (a: Candidate, b: Candidate): number =>
  a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : b.version - a.version;

function bad(message: string, field: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message, { detail: { field } });
}

function scopeOf(core: StoreCore, req: SearchFilter): Scope {
  if (typeof req !== "object" || req === null) throw bad("invalid search: expected a request object", "request");
  if (!Array.isArray(req.permitted)) throw bad("invalid permitted: expected an array of namespaces", "permitted");
  const permitted = new Set(req.permitted.map((ns: unknown) => parseNamespace(ns)));
  let namespaces = [...permitted];
  if (req.namespaces !== undefined) {
    if (!Array.isArray(req.namespaces)) throw bad("invalid namespaces: expected an array of namespaces", "namespaces");
    const wanted = new Set(req.namespaces.map((ns: unknown) => parseNamespace(ns)));
    for (const ns of wanted) {
      if (!permitted.has(ns)) {
        throw new MaxwellError(ErrorCode.Forbidden, `namespace ${ns} is not readable by this caller`, { detail: { namespace: ns } });
      }
    }
    namespaces = [...wanted];
  }
  namespaces.sort();
  const k = checkCount(req.k, "k");
  const tags = req.tags === undefined ? [] : checkTags(req.tags);
  const kinds = req.kinds === undefined ? undefined : new Set(checkKindList(req.kinds));
  const from = req.from === undefined ? undefined : checkTime(req.from, "from");
  const to = req.to === undefined ? undefined : checkTime(req.to, "to");
  const now = core.now();
  return {
    namespaces,
    k,
    accepts: (row) =>
      visible(row.expiresAt, now) &&
      (kinds === undefined || kinds.has(row.kind)) &&
      (from === undefined || row.at >= from) &&
      (to === undefined || row.at < to) &&
      tags.every((tag) => row.tags.includes(tag)),
  };
}

function checkKindList(value: unknown): RecordKind[] {
  if (!Array.isArray(value)) throw bad("invalid kinds: expected an array", "kinds");
  return value.map((kind: unknown) => checkKind(kind));
}

function checkQuery(value: unknown): string {
  if (typeof value !== "string" || value.trim().length === 0) throw bad("invalid query: expected a non-empty string", "query");
  if (value.length > MemoryLimits.maxQueryLength) {
    throw bad(`query too long: ${value.length} characters; the limit is ${MemoryLimits.maxQueryLength}`, "query");
  }
  return value;
}

/** The best `depth` text candidates, best first. */
function rankText(core: StoreCore, scope: Scope, query: string, depth: number): { candidate: Candidate; score: number }[] {
  const terms = tokenize(query);
  if (terms.length === 0 || scope.namespaces.length === 0) return [];
  const top = new TopK<Candidate>(depth, byNamespaceThenNewest);
  for (const { ns, version, score } of bm25(core, scope.namespaces, terms)) {
    if (!top.admits(score)) continue;
    const doc = indexedDoc(core, ns, version);
    if (doc === undefined || !scope.accepts(doc)) continue;
    top.push(score, { ns, kind: doc.kind, key: doc.key, version });
  }
  return top.sorted().map(({ score, item }) => ({ candidate: item, score }));
}

/** The best `depth` vector candidates, best first. */
function rankVector(
  core: StoreCore,
  scope: Scope,
  vector: readonly number[] | Float32Array,
  depth: number,
): { candidate: Candidate; score: number }[] {
  const query = checkVector(vector);
  // Check every namespace's dimension before computing anything.
  const searched: NamespaceId[] = [];
  for (const ns of scope.namespaces) {
    const dimension = core.meta(ns).dimension;
    if (dimension === undefined) continue;
    if (dimension !== query.length) {
      throw bad(`vector has dimension ${query.length}; namespace ${ns} holds vectors of dimension ${dimension}`, "vector");
    }
    searched.push(ns);
  }
  let norm = 0;
  for (const x of query) norm += x * x;
  const scale = 1 / Math.sqrt(norm);
  for (let i = 0; i < query.length; i++) query[i] = (query[i] as number) * scale;

  const top = new TopK<Candidate>(depth, byNamespaceThenNewest);
  for (const ns of searched) {
    const vectors = core.vectors.namespace(ns);
    if (vectors === undefined) continue;
    const scores = vectors.scores(query);
    for (let i = 0; i < scores.length; i++) {
      const score = scores[i] as number;
      if (!top.admits(score)) continue;
      const meta = vectors.meta(i);
      if (!scope.accepts(meta)) continue;
      top.push(score, { ns, kind: meta.kind, key: meta.key, version: meta.version });
    }
  }
  return top.sorted().map(({ score, item }) => ({ candidate: item, score }));
}

/** Reads a candidate's record; undefined when it changed or expired since it was ranked. */
function resolve(core: StoreCore, c: Candidate): MemoryRecord | undefined {
  const row = core.row(c.ns, c.kind, c.key);
  if (row === undefined || row.version !== c.version || !visible(row.expiresAt, core.now())) return undefined;
  return core.toRecord(c.ns, c.kind, c.key, row);
}

function hits(core: StoreCore, ranked: { candidate: Candidate; score: number }[], k: number): SearchHit[] {
  const out: SearchHit[] = [];
  for (const { candidate, score } of ranked) {
    if (out.length === k) break;
    const record = resolve(core, candidate);
    if (record !== undefined) out.push({ record, score });
  }
  return out;
}

/** Full-text search ranked by BM25. A query with no indexable words finds nothing. */
export function searchText(core: StoreCore, req: TextSearchRequest): SearchHit[] {
  core.assertOpen();
  const scope = scopeOf(core, req);
  const query = checkQuery(req.query);
  return hits(core, rankText(core, scope, query, scope.k), scope.k);
}

/** Vector search: the k records whose vectors have the highest cosine similarity to the query. */
export function searchVector(core: StoreCore, req: VectorSearchRequest): SearchHit[] {
  core.assertOpen();
  const scope = scopeOf(core, req);
  return hits(core, rankVector(core, scope, req.vector, scope.k), scope.k);
}

/**
 * Hybrid search: the text and vector rankings (each taken to a depth of max(2k, 50), at most
 * 1000) fused by reciprocal rank, score = Σ 1 / (60 + rank).
 */
export function searchHybrid(core: StoreCore, req: HybridSearchRequest): SearchHit[] {
  core.assertOpen();
  const scope = scopeOf(core, req);
  const query = checkQuery(req.query);
  const depth = Math.min(MemoryLimits.maxK, Math.max(2 * scope.k, 50));
  const vectorRanked = rankVector(core, scope, req.vector, depth);
  const textRanked = rankText(core, scope, query, depth);

  const fused = new Map<string, { candidate: Candidate; score: number; text?: ComponentRank; vector?: ComponentRank }>();
  const add = (list: { candidate: Candidate; score: number }[], which: "text" | "vector"): void => {
    list.forEach(({ candidate, score }, i) => {
      const id = `${candidate.ns}\u0000${candidate.version}`;
      let entry = fused.get(id);
      if (entry === undefined) {
        entry = { candidate, score: 0 };
        fused.set(id, entry);
      }
      entry.score += 1 / (RRF_K + i + 1);
      entry[which] = { rank: i + 1, score };
    });
  };
  add(textRanked, "text");
  add(vectorRanked, "vector");

  const ranked = [...fused.values()].sort((a, b) => b.score - a.score || byNamespaceThenNewest(a.candidate, b.candidate));
  const out: SearchHit[] = [];
  for (const entry of ranked) {
    if (out.length === scope.k) break;
    const record = resolve(core, entry.candidate);
    if (record === undefined) continue;
    const hit: SearchHit = { record, score: entry.score };
    if (entry.text !== undefined) hit.text = entry.text;
    if (entry.vector !== undefined) hit.vector = entry.vector;
    out.push(hit);
  }
  return out;
}
