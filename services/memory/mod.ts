/**
 * Maxwell's memory: agent memory on LMDB with provenance on every record, and the memory service
 * that serves it behind the kernel as a projection of the log (docs/memory.md).
 *
 * What the kernel uses: {@link parseMemoryArgs}, {@link namespacesOf} and the op sets (ops.ts,
 * pure) to validate and authorize a `mem` syscall before logging it; {@link NamespaceKeys} with
 * {@link sealMemoryArgs} / {@link openMemoryResult} to keep memory content erasable in the log.
 * What a replay uses: {@link rebuildFromLog}. The service itself is main.ts.
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
  EffectOutcome,
  EffectWrite,
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
export { NamespaceKind, isNamespace, namespaceOf, namespaceParts, parseNamespace } from "../../src/memory/namespace.js";
export type { NamespaceId } from "../../src/memory/namespace.js";
export { MemoryLimits, RecordKind, episodeId, parseEpisodeId } from "../../src/memory/record.js";
export type { MemoryRecord, MemoryValue, Provenance } from "../../src/memory/record.js";
export { RRF_K } from "./search.js";
export type { ComponentRank, HybridSearchRequest, SearchFilter, SearchHit, TextSearchRequest, VectorSearchRequest } from "./search.js";
export { BM25 } from "./text-index.js";
export { tokenize } from "./tokenizer.js";
export type { DigestOptions } from "./digest.js";
export { EXPORT_FORMAT, EXPORT_VERSION } from "./export.js";
export type { ImportOptions, ImportSummary } from "./export.js";
export type { CompactionReport } from "./compaction.js";
export { KEEP_EFFECTS } from "./compaction.js";
export type { ExportCursor, ExportPage } from "./export.js";
export {
  MAX_SEARCH_NAMESPACES,
  MEMORY_LOGGED_WRITE_OPS,
  MEMORY_READ_OPS,
  MEMORY_WRITE_OPS,
  MemoryOp,
  SearchMode,
  isMemoryRead,
  isMemoryWrite,
  memoryRules,
  namespacesOf,
  parseMemoryArgs,
} from "../../src/memory/ops.js";
export type {
  AppendArgs,
  DeleteArgs,
  EraseArgs,
  GetArgs,
  HitView,
  ListArgs,
  MemoryArgs,
  MemoryArgsByOp,
  MemoryResultByOp,
  PutArgs,
  RangeArgs,
  RecordView,
  SearchArgs,
  WrittenView,
} from "../../src/memory/ops.js";
export { NamespaceKeys } from "../../src/memory/keys.js";
export type { SealedBox } from "../../src/memory/keys.js";
export { openMemoryArgs, openMemoryResult, openRecordView, recordView, sealMemoryArgs } from "../../src/memory/sealing.js";
export type { SealedAppendArgs, SealedPutArgs } from "../../src/memory/sealing.js";
export { applyLogEvent, applyLogEvents, effectWriteOf, eventOfCall, isMemoryWriteEvent, rebuildFromLog } from "./apply.js";
export type { LogInput, MemoryWriteEvent, RebuildOptions, RebuildReport } from "./apply.js";
export { CallClock, MemoryService, serveMemory } from "./service.js";
export type { MemoryServer, MemoryServiceOptions } from "./service.js";
export { AdminRequest, EXPORT_PAGE_BYTES, answerAdmin } from "./admin.js";
