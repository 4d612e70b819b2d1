/**
 * What of a memory call is sealed in the log, and how it is opened again. Everything that holds
 * memory content goes into the log sealed under the namespace key (keys.ts): the value and vector
 * of every logged write, and of every record in a logged read answer. Keys, versions, times, tags
 * and provenance stay readable: they are what the log is audited by. Erasing a namespace's key
 * leaves every sealed part unreadable.
 *
 * The kernel's side:
 *
 * ```ts
 * const args = parseMemoryArgs(op, body);                 // before anything is logged
 * const logged = sealMemoryArgs(keys, op, target, args);  // the effect.started event's args
 * // ... log, call the memory service with the logged args, record its (sealed) result ...
 * const forAgent = openMemoryResult(keys, op, reply.result); // what the agent gets back
 * ```
 */
import { ErrorCode, MaxwellError } from "../protocol/mod.js";
import type { NamespaceKeys, SealedBox } from "./keys.js";
import { MemoryOp, type AppendArgs, type HitView, type PutArgs, type RecordView } from "./ops.js";
import { RecordKind, type MemoryRecord, type MemoryValue } from "./record.js";

/** `put` args as logged: the value and vector sealed together. */
export interface SealedPutArgs extends Omit<PutArgs, "value" | "vector"> {
  sealed: SealedBox;
}

/** `append` args as logged. */
export interface SealedAppendArgs extends Omit<AppendArgs, "value" | "vector"> {
  sealed: SealedBox;
}

/** What a sealed box of a write or a record holds. */
interface Content {
  value: MemoryValue;
  vector?: number[];
}

/**
 * The args of a write as the kernel logs them: `put` and `append` get their value and vector
 * replaced by one sealed box; other operations' args hold no content and come back unchanged.
 * `args` must come from {@link parseMemoryArgs}.
 */
export function sealMemoryArgs(keys: NamespaceKeys, op: string, target: string, args: unknown): unknown {
  if (op !== MemoryOp.Put && op !== MemoryOp.Append) return args;
  const { value, vector, ...rest } = args as PutArgs | AppendArgs;
  const content: Content = { value };
  if (vector !== undefined) content.vector = vector;
  // A keyed record is sealed under its own key, so it can be erased alone; episodes under the namespace's.
  return { ...rest, sealed: op === MemoryOp.Put ? keys.seal(target, content, (args as PutArgs).key) : keys.seal(target, content) };
}

/**
 * The args of a logged write with the sealed parts opened: what {@link sealMemoryArgs} was given.
 * Throws `not_found` (detail `erased: true`) when the namespace key that sealed them was erased.
 * Args logged unsealed (a value in the clear) come back as they are.
 */
export function openMemoryArgs(keys: NamespaceKeys, op: string, target: string, args: unknown): unknown {
  if (op !== MemoryOp.Put && op !== MemoryOp.Append) return args;
  if (typeof args !== "object" || args === null || !("sealed" in args)) return args;
  const { sealed, ...rest } = args as SealedPutArgs;
  const content = keys.open(target, sealed) as Partial<Content> | null;
  if (typeof content !== "object" || content === null || !("value" in content)) {
    throw new MaxwellError(ErrorCode.BadRequest, `the sealed args of this ${op} hold no value`);
  }
  return { ...rest, value: content.value, ...(content.vector !== undefined ? { vector: content.vector } : {}) };
}

/** A stored record as a read answers it: content sealed (`keys` given) or in the clear (operators). */
export function recordView(record: MemoryRecord, keys?: NamespaceKeys): RecordView {
  const view: RecordView = {
    namespace: record.namespace,
    kind: record.kind,
    key: record.key,
    version: record.version,
    at: record.at,
    tags: record.tags,
    provenance: record.provenance,
  };
  if (record.expiresAt !== undefined) view.expiresAt = record.expiresAt;
  if (keys === undefined) {
    view.value = record.value;
    if (record.vector !== undefined) view.vector = record.vector;
  } else {
    const content: Content = { value: record.value };
    if (record.vector !== undefined) content.vector = record.vector;
    view.sealed = record.kind === RecordKind.Value ? keys.seal(record.namespace, content, record.key) : keys.seal(record.namespace, content);
  }
  return view;
}

/** A record view with its content opened; one whose key was erased comes back with `erased: true` and no value. */
export function openRecordView(keys: NamespaceKeys, view: RecordView): RecordView {
  if (view.sealed === undefined) return view;
  const { sealed, ...rest } = view;
  try {
    const content = keys.open(view.namespace, sealed) as Content;
    const opened: RecordView = { ...rest, value: content.value };
    if (content.vector !== undefined) opened.vector = content.vector;
    return opened;
  } catch (err) {
    if (MaxwellError.from(err).code !== ErrorCode.NotFound) throw err;
    return { ...rest, erased: true };
  }
}

/**
 * A read result with every record's content opened, for the agent (live, or answered again from
 * the log). Records whose key was erased come back marked `erased` without a value. Results of
 * writes hold no content and come back unchanged.
 */
export function openMemoryResult(keys: NamespaceKeys, op: string, result: unknown): unknown {
  if (typeof result !== "object" || result === null) return result;
  const r = result as { record?: RecordView | null; records?: RecordView[]; hits?: HitView[] };
  switch (op) {
    case MemoryOp.Get:
      return r.record ? { ...r, record: openRecordView(keys, r.record) } : result;
    case MemoryOp.Range:
    case MemoryOp.List:
      return Array.isArray(r.records) ? { ...r, records: r.records.map((v) => openRecordView(keys, v)) } : result;
    case MemoryOp.Search:
      return Array.isArray(r.hits) ? { ...r, hits: r.hits.map((h) => ({ ...h, record: openRecordView(keys, h.record) })) } : result;
    default:
      return result;
  }
}
