/**
 * Maxwell's memory: agent memory on LMDB with provenance on every record, the library the
 * memory service wraps (the service, its kernel integration, SDK and CLI sit on top of it).
 *
 * @example
 * ```ts
 * import { openMemoryStore } from "./mod.js";
 * const store = openMemoryStore({ path: dir });
 * const provenance = { writer: "worker-1", principal: "alice", causedBy: eventId, labels: ["web"] };
 * await store.put({ namespace: "agent:worker-1", key: "topic", value: "lmdb page reuse", provenance });
 * await store.append({ namespace: "agent:worker-1", value: { saw: "a 404" }, vector: embedding, provenance });
 * const hits = store.searchHybrid({ permitted: ["agent:worker-1"], query: "lmdb", vector: embedding, k: 10 });
 * const proof = store.digest();
 * for (const line of store.exportNamespace("agent:worker-1")) process.stdout.write(line);
 * ```
 */
export { openMemoryStore } from "./store.js";
export type {
  AppendRequest,
  BatchOp,
  DeleteRequest,
  EpisodeRange,
  ListRequest,
  MemoryStore,
  NamespaceInfo,
  PutRequest,
  RecordInput,
  StoreOptions,
  StoreStats,
  WriteContext,
} from "./store.js";
export { NamespaceKind, isNamespace, namespaceOf, namespaceParts, parseNamespace } from "./namespace.js";
export type { NamespaceId } from "./namespace.js";
export { MemoryLimits, RecordKind, episodeId, parseEpisodeId } from "./record.js";
export type { MemoryRecord, MemoryValue, Provenance } from "./record.js";
export { RRF_K } from "./search.js";
export type { ComponentRank, HybridSearchRequest, SearchFilter, SearchHit, TextSearchRequest, VectorSearchRequest } from "./search.js";
export { BM25 } from "./text-index.js";
export { tokenize } from "./tokenizer.js";
export type { DigestOptions } from "./digest.js";
export { EXPORT_FORMAT, EXPORT_VERSION } from "./export.js";
export type { ImportOptions, ImportSummary } from "./export.js";
export type { CompactionReport } from "./compaction.js";
