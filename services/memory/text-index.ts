/**
 * Full-text ranking: Okapi BM25 over the postings core.ts maintains. Every statistic BM25 uses
 * (document count, average length, document frequency) is summed over the namespaces being
 * searched and nothing else, so a record in a namespace the caller may not read can neither
 * appear nor move a score. Corpus statistics include records whose TTL has passed but that
 * compaction has not removed yet; such records are never returned.
 */
import { POSTING_BYTES, decodeDocRow, forEachPosting, prefixRange, versionKey, type DocRow } from "./layout.js";
import type { StoreCore } from "./core.js";
import type { NamespaceId } from "../../src/memory/namespace.js";

/** BM25 parameters (the usual defaults). */
export const BM25 = { k1: 1.2, b: 0.75 } as const;

/** A scored document: a record version in a namespace. */
export interface TextCandidate {
  ns: NamespaceId;
  version: number;
  score: number;
}

/**
 * BM25 scores of every document in `namespaces` that holds at least one of `terms` (repeats in
 * the query count once). Unordered.
 */
export function bm25(core: StoreCore, namespaces: readonly NamespaceId[], terms: readonly string[]): TextCandidate[] {
  let documents = 0;
  let totalLength = 0;
  for (const ns of namespaces) {
    const meta = core.meta(ns);
    documents += meta.docs;
    totalLength += meta.terms;
  }
  if (documents === 0) return [];
  const averageLength = totalLength / documents;
  const { k1, b } = BM25;
  const scores = new Map<NamespaceId, Map<number, number>>();

  for (const term of new Set(terms)) {
    const chunks: [NamespaceId, Uint8Array[]][] = [];
    let df = 0;
    for (const ns of namespaces) {
      const found: Uint8Array[] = [];
      for (const { value } of core.tables.postings.getRange(prefixRange(ns, term))) {
        found.push(value);
        df += value.length / POSTING_BYTES;
      }
      if (found.length > 0) chunks.push([ns, found]);
    }
    if (df === 0) continue;
    const idf = Math.log(1 + (documents - df + 0.5) / (df + 0.5));
    for (const [ns, found] of chunks) {
      let perDoc = scores.get(ns);
      if (perDoc === undefined) {
        perDoc = new Map();
        scores.set(ns, perDoc);
      }
      const into = perDoc;
      for (const chunk of found) {
        forEachPosting(chunk, (version, tf, length) => {
          const s = (idf * tf * (k1 + 1)) / (tf + k1 * (1 - b + (b * length) / averageLength));
          into.set(version, (into.get(version) ?? 0) + s);
        });
      }
    }
  }

  const out: TextCandidate[] = [];
  for (const [ns, perDoc] of scores) for (const [version, score] of perDoc) out.push({ ns, version, score });
  return out;
}

/** What full-text search indexed for a record version (for filtering), if anything. */
export function indexedDoc(core: StoreCore, ns: NamespaceId, version: number): DocRow | undefined {
  const bytes = core.tables.docs.get(versionKey(ns, version));
  return bytes === undefined ? undefined : decodeDocRow(bytes);
}
