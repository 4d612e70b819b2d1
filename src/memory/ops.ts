/**
 * The memory operations an agent can ask the kernel for (`mem` syscall), their arguments and
 * their results: the contract between the kernel and the memory service. Pure (no I/O), so the
 * kernel can validate a call with {@link parseMemoryArgs} before it logs anything: bad input never
 * reaches the log, the store, or a policy decision.
 *
 * Writes (`put`, `delete`, `append`) are logged first, as `effect.started` events, and take effect
 * from that event: the memory service applies them in log order, live and on a rebuild. Reads
 * (`get`, `range`, `list`, `search`) are answered from the store, and the kernel records the answer.
 * `erase` is not an agent operation: the kernel logs it when an operator erases a namespace.
 *
 * @example
 * ```ts
 * const args = parseMemoryArgs("put", { key: "plan", value: { step: 1 }, tags: ["todo"] });
 * for (const ns of namespacesOf("put", "agent:worker-1", args)) authorize("memory.write", ns);
 * ```
 */
import { ErrorCode, MaxwellError, type Labels } from "../protocol/mod.js";
import { parseNamespace, type NamespaceId } from "./namespace.js";
import {
  MemoryLimits,
  checkCount,
  checkExpectedVersion,
  checkKey,
  checkLabels,
  checkTags,
  checkTime,
  checkTtl,
  checkValue,
  checkVector,
  type MemoryRecord,
  type MemoryValue,
} from "./record.js";
import type { SealedBox } from "./keys.js";

/** Every memory operation name, as it appears in `effect.started.op` and the service subject. */
export const MemoryOp = {
  Put: "put",
  Delete: "delete",
  Append: "append",
  Get: "get",
  Range: "range",
  List: "list",
  Search: "search",
  /** Operator erasure of a namespace, logged by the kernel after it destroyed the namespace key. */
  Erase: "erase",
  /** Operator import of an export into an empty namespace, logged by the kernel (sealed). */
  Import: "import",
  /** Operator requests (`maxwell memory ...`), forwarded by the kernel from `mx.admin.memory`; never logged. */
  Admin: "admin",
} as const;
export type MemoryOp = (typeof MemoryOp)[keyof typeof MemoryOp];

/** Agent operations that change the store: `memory.write` on the namespace. */
export const MEMORY_WRITE_OPS: ReadonlySet<string> = new Set<string>([MemoryOp.Put, MemoryOp.Delete, MemoryOp.Append]);
/** Agent operations that read: `memory.read` on every namespace {@link namespacesOf} names. */
export const MEMORY_READ_OPS: ReadonlySet<string> = new Set<string>([MemoryOp.Get, MemoryOp.Range, MemoryOp.List, MemoryOp.Search]);
/** Logged operations the store applies (live and on a rebuild): the writes and `erase`. */
export const MEMORY_LOGGED_WRITE_OPS: ReadonlySet<string> = new Set<string>([...MEMORY_WRITE_OPS, MemoryOp.Erase, MemoryOp.Import]);

/** Most namespaces one search may read. */
export const MAX_SEARCH_NAMESPACES = 64;

/** `put`: write a key/value record. `expectedVersion` makes it a compare-and-set (0 = must not exist). */
export interface PutArgs {
  key: string;
  value: MemoryValue;
  expectedVersion?: number;
  /** Time to live in ms from the write (the kernel's clock at the write). */
  ttlMs?: number;
  tags?: string[];
  /** An embedding (float32 precision); its dimension must match the namespace's. */
  vector?: number[];
  /** Labels of what the value was derived from, besides the caller's own (joined with them). */
  labels?: Labels;
}

/** `delete`: remove a key/value record. */
export interface DeleteArgs {
  key: string;
}

/** `append`: add an episodic entry; its key is a time-ordered id the result names. */
export interface AppendArgs {
  value: MemoryValue;
  tags?: string[];
  vector?: number[];
  ttlMs?: number;
  labels?: Labels;
}

/** `get`: one key/value record. */
export interface GetArgs {
  key: string;
}

/** `range`: episodes written in [from, to), oldest first. */
export interface RangeArgs {
  from?: number;
  to?: number;
  /** 1-1000, default 100. */
  limit?: number;
}

/** `list`: key/value records in key order. */
export interface ListArgs {
  prefix?: string;
  /** 1-1000, default 100. */
  limit?: number;
}

export const SearchMode = { Text: "text", Vector: "vector", Hybrid: "hybrid" } as const;
export type SearchMode = (typeof SearchMode)[keyof typeof SearchMode];

/** `search`: ranked records of the namespaces (default: the target), filtered by tags and time. */
export interface SearchArgs {
  mode: SearchMode;
  /** Required for text and hybrid. */
  query?: string;
  /** Required for vector and hybrid. */
  vector?: number[];
  /** 1-1000. */
  k: number;
  /** The namespaces to search; each is authorized for `memory.read`. Default: [target]. */
  namespaces?: string[];
  /** Only records carrying every one of these tags. */
  tags?: string[];
  /** Only records written at or after this time (ms since the epoch). */
  since?: number;
  /** Only records written before this time. */
  until?: number;
}

/** `erase`: no arguments. */
export type EraseArgs = Record<string, never>;

export interface MemoryArgsByOp {
  put: PutArgs;
  delete: DeleteArgs;
  append: AppendArgs;
  get: GetArgs;
  range: RangeArgs;
  list: ListArgs;
  search: SearchArgs;
  erase: EraseArgs;
}
export type MemoryArgs = MemoryArgsByOp[keyof MemoryArgsByOp];

/**
 * A record as a read returns it. Answers to the kernel's calls carry the value and vector
 * `sealed` under the namespace key (the kernel records them in the log, which must stay
 * erasable) and the kernel opens them for the agent (see sealing.ts); operator answers carry
 * them in the clear. `erased` marks a record whose sealed value can no longer be opened.
 */
export interface RecordView
  extends Pick<MemoryRecord, "namespace" | "kind" | "key" | "version" | "at" | "expiresAt" | "tags" | "provenance">,
    Partial<Pick<MemoryRecord, "value" | "vector">> {
  /** AES-256-GCM of msgpack `{ value, vector? }` under the record's (or the namespace's) key. */
  sealed?: SealedBox;
  erased?: true;
}

/** One search hit: the record, its score, and (hybrid) where it ranked in each list. */
export interface HitView {
  record: RecordView;
  score: number;
  text?: { rank: number; score: number };
  vector?: { rank: number; score: number };
}

/** What a write did. */
export interface WrittenView {
  namespace: NamespaceId;
  key: string;
  version: number;
  at: number;
  expiresAt?: number;
}

/** The result of each operation. Read results' `labels` (in the service reply) join the labels of the records returned. */
export interface MemoryResultByOp {
  put: WrittenView;
  append: WrittenView;
  delete: { deleted: boolean };
  erase: { erased: number };
  get: { record: RecordView | null };
  range: { records: RecordView[] };
  list: { records: RecordView[] };
  search: { hits: HitView[] };
}

function bad(message: string, field?: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message, field === undefined ? undefined : { detail: { field } });
}

/** The fields of an args object, refusing anything else (a typo must not be silently ignored). */
function fields(op: string, args: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (args === undefined || args === null) return {};
  if (typeof args !== "object" || Array.isArray(args) || args instanceof Uint8Array) {
    throw bad(`${op}: expected an object of arguments`);
  }
  const a = args as Record<string, unknown>;
  for (const name of Object.keys(a)) {
    if (a[name] === undefined) continue;
    if (!allowed.includes(name)) {
      throw bad(`${op}: unknown argument ${JSON.stringify(name)}; ${op} takes ${allowed.length > 0 ? allowed.join(", ") : "no arguments"}`, name);
    }
  }
  return a;
}

function vectorOf(value: unknown): number[] | undefined {
  return value === undefined ? undefined : Array.from(checkVector(value));
}

function countOf(value: unknown, field: string): number | undefined {
  return value === undefined ? undefined : checkCount(value, field);
}

/** Copies the defined optional fields, so a parsed object has no `undefined` members (msgpack drops them anyway). */
function withOptional<T extends object>(base: T, optional: Record<string, unknown>): T {
  const out = base as Record<string, unknown>;
  for (const [name, value] of Object.entries(optional)) if (value !== undefined) out[name] = value;
  return out as T;
}

function tagsOf(value: unknown): string[] | undefined {
  return value === undefined ? undefined : checkTags(value);
}

function labelsOf(value: unknown): string[] | undefined {
  return value === undefined ? undefined : checkLabels(value, "labels");
}

/**
 * Validates the arguments of a memory operation and returns them normalized (tags and labels
 * sorted and unique, vectors at float32 precision). Throws a `bad_request` MaxwellError naming
 * the field and the rule. State-dependent rules (a vector's dimension against the namespace's, a
 * compare-and-set) are the store's, when the write is applied.
 */
export function parseMemoryArgs(op: "put", args: unknown): PutArgs;
export function parseMemoryArgs(op: "delete", args: unknown): DeleteArgs;
export function parseMemoryArgs(op: "append", args: unknown): AppendArgs;
export function parseMemoryArgs(op: "get", args: unknown): GetArgs;
export function parseMemoryArgs(op: "range", args: unknown): RangeArgs;
export function parseMemoryArgs(op: "list", args: unknown): ListArgs;
export function parseMemoryArgs(op: "search", args: unknown): SearchArgs;
export function parseMemoryArgs(op: "erase", args: unknown): EraseArgs;
export function parseMemoryArgs(op: string, args: unknown): MemoryArgs;
export function parseMemoryArgs(op: string, args: unknown): MemoryArgs {
  switch (op) {
    case MemoryOp.Put: {
      const a = fields(op, args, ["key", "value", "expectedVersion", "ttlMs", "tags", "vector", "labels"]);
      if (!("value" in a) || a["value"] === undefined) throw bad("put: missing 'value'", "value");
      checkValue(a["value"]);
      return withOptional<PutArgs>(
        { key: checkKey(a["key"]), value: a["value"] as MemoryValue },
        {
          expectedVersion: checkExpectedVersion(a["expectedVersion"]),
          ttlMs: checkTtl(a["ttlMs"]),
          tags: tagsOf(a["tags"]),
          vector: vectorOf(a["vector"]),
          labels: labelsOf(a["labels"]),
        },
      );
    }
    case MemoryOp.Delete: {
      const a = fields(op, args, ["key"]);
      return { key: checkKey(a["key"]) };
    }
    case MemoryOp.Append: {
      const a = fields(op, args, ["value", "tags", "vector", "ttlMs", "labels"]);
      if (!("value" in a) || a["value"] === undefined) throw bad("append: missing 'value'", "value");
      checkValue(a["value"]);
      return withOptional<AppendArgs>(
        { value: a["value"] as MemoryValue },
        { tags: tagsOf(a["tags"]), vector: vectorOf(a["vector"]), ttlMs: checkTtl(a["ttlMs"]), labels: labelsOf(a["labels"]) },
      );
    }
    case MemoryOp.Get: {
      const a = fields(op, args, ["key"]);
      return { key: checkKey(a["key"]) };
    }
    case MemoryOp.Range: {
      const a = fields(op, args, ["from", "to", "limit"]);
      const from = a["from"] === undefined ? undefined : checkTime(a["from"], "from");
      const to = a["to"] === undefined ? undefined : checkTime(a["to"], "to");
      if (from !== undefined && to !== undefined && from >= to) throw bad(`range: 'from' (${from}) must be before 'to' (${to})`, "from");
      return withOptional<RangeArgs>({}, { from, to, limit: countOf(a["limit"], "limit") });
    }
    case MemoryOp.List: {
      const a = fields(op, args, ["prefix", "limit"]);
      const prefix = a["prefix"] === undefined || a["prefix"] === "" ? undefined : checkKey(a["prefix"], "prefix");
      return withOptional<ListArgs>({}, { prefix, limit: countOf(a["limit"], "limit") });
    }
    case MemoryOp.Search:
      return parseSearch(fields(op, args, ["mode", "query", "vector", "k", "namespaces", "tags", "since", "until"]));
    case MemoryOp.Erase:
      fields(op, args, []);
      return {};
    default:
      throw bad(
        `unknown memory operation ${JSON.stringify(op)}; expected one of ${[...MEMORY_WRITE_OPS, ...MEMORY_READ_OPS].join(", ")}`,
        "op",
      );
  }
}

function parseSearch(a: Record<string, unknown>): SearchArgs {
  const mode = a["mode"];
  if (mode !== SearchMode.Text && mode !== SearchMode.Vector && mode !== SearchMode.Hybrid) {
    throw bad(`search: invalid mode ${JSON.stringify(mode)}; expected "text", "vector" or "hybrid"`, "mode");
  }
  const wantsQuery = mode !== SearchMode.Vector;
  const wantsVector = mode !== SearchMode.Text;
  let query: string | undefined;
  if (wantsQuery) {
    const q = a["query"];
    if (typeof q !== "string" || q.trim().length === 0) throw bad(`search: mode ${mode} needs a non-empty 'query'`, "query");
    if (q.length > MemoryLimits.maxQueryLength) throw bad(`search: query is ${q.length} characters; the limit is ${MemoryLimits.maxQueryLength}`, "query");
    query = q;
  } else if (a["query"] !== undefined) {
    throw bad("search: mode vector takes no 'query' (use hybrid to combine text and vector)", "query");
  }
  let vector: number[] | undefined;
  if (wantsVector) {
    if (a["vector"] === undefined) throw bad(`search: mode ${mode} needs a 'vector'`, "vector");
    vector = vectorOf(a["vector"]);
  } else if (a["vector"] !== undefined) {
    throw bad("search: mode text takes no 'vector' (use hybrid to combine text and vector)", "vector");
  }
  const k = checkCount(a["k"], "k");
  let namespaces: string[] | undefined;
  if (a["namespaces"] !== undefined) {
    const list = a["namespaces"];
    if (!Array.isArray(list) || list.length === 0) throw bad("search: 'namespaces' must be a non-empty array of namespaces", "namespaces");
    if (list.length > MAX_SEARCH_NAMESPACES) throw bad(`search: ${list.length} namespaces; the limit is ${MAX_SEARCH_NAMESPACES}`, "namespaces");
    namespaces = [...new Set(list.map((ns: unknown) => parseNamespace(ns)))].sort();
  }
  const since = a["since"] === undefined ? undefined : checkTime(a["since"], "since");
  const until = a["until"] === undefined ? undefined : checkTime(a["until"], "until");
  if (since !== undefined && until !== undefined && since >= until) throw bad(`search: 'since' (${since}) must be before 'until' (${until})`, "since");
  return withOptional<SearchArgs>({ mode, k }, { query, vector, namespaces, tags: tagsOf(a["tags"]), since, until });
}

/**
 * The namespaces a call touches, each of which the kernel must authorize: the target, or for a
 * search the namespaces it names (default: the target). Validates the target.
 */
export function namespacesOf(op: string, target: string, args: unknown): NamespaceId[] {
  const ns = parseNamespace(target);
  if (op === MemoryOp.Search && typeof args === "object" && args !== null) {
    const named = (args as { namespaces?: unknown }).namespaces;
    if (Array.isArray(named) && named.length > 0) return [...new Set(named.map((n: unknown) => parseNamespace(n)))].sort();
  }
  return [ns];
}

export function isMemoryWrite(op: string): boolean {
  return MEMORY_WRITE_OPS.has(op);
}

export function isMemoryRead(op: string): boolean {
  return MEMORY_READ_OPS.has(op);
}

/** The four functions the kernel's `mem` syscall needs, in the shape services/kernel/decide.ts takes. */
export const memoryRules = {
  parse: (op: string, args: unknown): unknown => parseMemoryArgs(op, args),
  namespaces: namespacesOf,
  isWrite: isMemoryWrite,
  isRead: isMemoryRead,
} as const;
