/**
 * The memory store: agent memory on one LMDB environment, the library the memory service
 * wraps. Key/value records with versions and compare-and-set, append-only episodic entries
 * read by time range, per-record TTL, provenance on every record, full-text, vector and hybrid
 * search, a state digest, JSON Lines export/import and compaction.
 *
 * Versions: every write in a namespace takes the namespace's next revision as the record's
 * version, so a key's versions only ever increase, also across a delete and re-create, and a
 * stale compare-and-set can never match a newer record. `expectedVersion: 0` means "must not
 * exist". Deletes do not take a revision (nothing is left to carry it).
 *
 * Time: `now()` decides TTL visibility (an expired record is invisible to every read at once
 * and removed by the next compaction). A write's `at` defaults to `now()`; the memory service
 * passes the causing event's time instead, so a store rebuilt from the log is identical.
 *
 * @example
 * ```ts
 * const store = openMemoryStore({ path: "/var/lib/maxwell/memory" });
 * const provenance = { writer: "worker-1", principal: "alice", causedBy: eventId, labels: [] };
 * const r = await store.put({ namespace: "agent:worker-1", key: "plan", value: { step: 1 }, provenance });
 * await store.put({ namespace: "agent:worker-1", key: "plan", value: { step: 2 }, expectedVersion: r.version, provenance });
 * store.searchText({ permitted: ["agent:worker-1"], query: "plan", k: 5 });
 * await store.close();
 * ```
 */
import { ErrorCode, MaxwellError, type WireError } from "../../src/protocol/mod.js";
import { compact, type CompactionReport } from "./compaction.js";
import { StoreCore, visible, type StoreOptions, type WriteTx } from "./core.js";
import { digest, type DigestOptions } from "./digest.js";
import { checkImport, exportNamespace, exportPage, importNamespace, importPlan, parseImport, type ExportCursor, type ExportPage, type ImportOptions, type ImportSummary, type ParsedImport } from "./export.js";
import { decodeEffectRow, decodeRecordRow, encodeEffectRow, pack, prefixRange, recordKey, unpack, type EffectRow, type RecordRow } from "./layout.js";
import { parseNamespace, type NamespaceId } from "../../src/memory/namespace.js";
import {
  RecordKind,
  checkCount,
  checkExpectedVersion,
  checkKey,
  checkKind,
  checkProvenance,
  checkTags,
  checkText,
  checkTime,
  checkTtl,
  checkValue,
  checkVector,
  episodeId,
  episodeTimePrefix,
  type MemoryRecord,
  type MemoryValue,
  type Provenance,
} from "../../src/memory/record.js";
import {
  searchHybrid,
  searchText,
  searchVector,
  type HybridSearchRequest,
  type SearchHit,
  type TextSearchRequest,
  type VectorSearchRequest,
} from "./search.js";

export type { StoreOptions } from "./core.js";

/** What every write carries besides its payload. */
export interface WriteContext {
  /** Set by the kernel from the causing event; never taken from the agent. */
  provenance: Provenance;
  /** Write time, ms since the epoch. Default: `now()`. Pass the event time when projecting the log. */
  at?: number;
  /** Log sequence of the causing event: recorded as applied in the same commit (see {@link MemoryStore.appliedSeq}). */
  seq?: number;
}

/** The payload of a record. */
export interface RecordInput {
  /** Plain msgpack data, at most 64 KiB encoded. */
  value: MemoryValue;
  /** What full-text search indexes; default: the value's strings. */
  text?: string;
  tags?: readonly string[];
  /** An embedding for vector search; its dimension must match the namespace's. */
  vector?: readonly number[] | Float32Array;
  /** Time to live in ms from `at`. */
  ttlMs?: number;
}

export interface PutRequest extends RecordInput, WriteContext {
  namespace: string;
  key: string;
  /** Compare-and-set: the version the key must have now (0 = must not exist). */
  expectedVersion?: number;
}

export interface AppendRequest extends RecordInput, WriteContext {
  namespace: string;
}

export interface DeleteRequest {
  namespace: string;
  key: string;
  /** Default `kv`. Deleting an episode erases it. */
  kind?: RecordKind;
  expectedVersion?: number;
  seq?: number;
  /** Delete time: decides whether the record had expired. Default: `now()`. */
  at?: number;
}

/** One operation of a {@link MemoryStore.batch}. */
export type BatchOp = ({ op: "put" } & PutRequest) | ({ op: "append" } & AppendRequest) | ({ op: "delete" } & DeleteRequest);

/** A time range of episodes: `from` inclusive, `to` exclusive, oldest first unless `reverse`. */
export interface EpisodeRange {
  from?: number;
  to?: number;
  /** 1-1000, default 100. */
  limit?: number;
  reverse?: boolean;
}

/** A page of key/value records in key order. */
export interface ListRequest {
  prefix?: string;
  /** Start after this key (the last key of the previous page). */
  after?: string;
  /** 1-1000, default 100. */
  limit?: number;
}

export interface NamespaceInfo {
  namespace: NamespaceId;
  revision: number;
  dimension?: number;
}

/** Sizes, for tests, metrics and the compaction bound. */
export interface StoreStats {
  /** Stored rows per table (expired records count until compacted). */
  entries: { records: number; expiry: number; docs: number; postings: number; vectors: number; meta: number; effects: number };
  /** Highest page LMDB has used: the file never needs to be larger than this. */
  lastPage: number;
  pageSize: number;
}

/** Agent memory on LMDB. Obtain one with {@link openMemoryStore}. */
export interface MemoryStore {
  readonly path: string;
  /** A key/value record (or, with `kind: "episode"`, an episode by id); undefined if absent or expired. */
  get(namespace: string, key: string, kind?: RecordKind): MemoryRecord | undefined;
  /** Writes a key/value record; a mismatched `expectedVersion` fails with `conflict`. */
  put(req: PutRequest): Promise<MemoryRecord>;
  /** Appends an episode; its key is a time-ordered id. */
  append(req: AppendRequest): Promise<MemoryRecord>;
  /** Deletes a record; resolves whether a visible record was deleted. */
  delete(req: DeleteRequest): Promise<boolean>;
  /**
   * Several writes in one commit, all or nothing (a failure names the operation's index). Far
   * cheaper per write than separate calls: how a rebuild from the log should apply events.
   */
  batch(ops: readonly BatchOp[]): Promise<(MemoryRecord | boolean)[]>;
  /** Episodes in a time range. */
  episodes(namespace: string, range?: EpisodeRange): MemoryRecord[];
  /** Key/value records in key order. */
  list(namespace: string, req?: ListRequest): MemoryRecord[];
  /** Every namespace the store has seen. */
  namespaces(): NamespaceInfo[];
  /** How many visible records a namespace holds, by kind (reads every record: for operators, not hot paths). */
  count(namespace: string): { kv: number; episodes: number };
  info(namespace: string): NamespaceInfo;
  /** Removes every record of a namespace; its revision stays, so versions keep increasing. */
  eraseNamespace(namespace: string, opts?: { seq?: number }): Promise<number>;
  searchText(req: TextSearchRequest): SearchHit[];
  searchVector(req: VectorSearchRequest): SearchHit[];
  searchHybrid(req: HybridSearchRequest): SearchHit[];
  /** sha256 of the visible state (see digest.ts). */
  digest(opts?: DigestOptions): string;
  /** A namespace as JSON Lines (see export.ts), one line per string, each ending in "\n". */
  exportNamespace(namespace: string): Generator<string>;
  /** A page of at most `maxBytes` of a namespace's export; `next` continues it (see export.ts). */
  exportPage(namespace: string, opts: { after?: ExportCursor; maxBytes: number }): ExportPage;
  /** Validates an export without writing it: what an import would write. */
  checkImport(lines: string | Iterable<string> | AsyncIterable<string>, opts?: { namespace?: string }): Promise<ImportSummary>;
  importNamespace(lines: string | Iterable<string> | AsyncIterable<string>, opts?: ImportOptions): Promise<ImportSummary>;
  /** Removes expired records and their index rows, and all but the newest `keepEffects` (default 100,000) effect outcomes. */
  compact(opts?: { batch?: number; keepEffects?: number }): Promise<CompactionReport>;
  stats(): StoreStats;
  /** The highest log sequence of a write applied (0 when none). */
  appliedSeq(): number;
  /**
   * Applies logged writes, each exactly once: one commit for all, each effect's outcome (its
   * result, or why it was refused: a CAS conflict, a wrong vector dimension, an erased key)
   * recorded under its log sequence. An effect whose sequence already has an outcome is not
   * applied again; its recorded outcome comes back with `repeated: true`.
   */
  applyEffects(effects: readonly EffectWrite[], opts?: { resumeSeq?: number }): Promise<EffectOutcome[]>;
  /** The recorded outcome of the write logged at `seq`, if the store applied one. */
  effectOutcome(seq: number): EffectOutcome | undefined;
  /** Every logged write at or below this sequence is applied: where catching up with the log resumes. */
  resumeSeq(): number;
  /** Records that every logged write up to `resumeSeq` is applied (after reading the log that far). */
  markResume(resumeSeq: number): Promise<void>;
  /** A store-wide fact (e.g. the id of the log's first event, to tell logs apart). */
  fact(name: string): string | undefined;
  setFact(name: string, value: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * A logged write to apply (see {@link MemoryStore.applyEffects}): the effect's id and log
 * sequence, and the write, or the error that makes it a no-op (recorded as its outcome).
 */
export interface EffectWrite {
  seq: number;
  /** Id of the `effect.started` event. */
  effect: string;
  /** The operation as logged: put, append, delete or erase. */
  op: string;
  namespace: string;
  write: BatchOp | { op: "erase"; namespace: string } | { op: "import"; namespace: string; lines: string[] } | { error: MaxwellError };
}

/** What applying one logged write did. */
export interface EffectOutcome {
  seq: number;
  effect: string;
  op: string;
  namespace: string;
  ok: boolean;
  /** put/append: the record written; delete: whether a record was deleted; erase: records removed. */
  result?: unknown;
  error?: WireError;
  /** The outcome was recorded before: this call changed nothing. */
  repeated?: true;
}

/** Error codes a write's own checks raise before it changes anything: recorded as its outcome. */
const REFUSALS: ReadonlySet<string> = new Set([ErrorCode.BadRequest, ErrorCode.Conflict, ErrorCode.NotFound, ErrorCode.Forbidden]);

/** Opens (creating if needed) the memory store in `options.path`. */
export function openMemoryStore(options: StoreOptions): MemoryStore {
  return new MemoryStoreImpl(StoreCore.open(options));
}

/** A validated write, ready to store. */
interface Draft {
  ns: NamespaceId;
  row: Omit<RecordRow, "version">;
  vector: Float32Array | undefined;
  seq: number | undefined;
}

function checkSeq(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new MaxwellError(ErrorCode.BadRequest, `invalid seq ${JSON.stringify(value)}: expected a non-negative integer`, { detail: { field: "seq" } });
  }
  return value;
}

/** A record version a write just stored. */
interface WrittenRow {
  ns: NamespaceId;
  kind: RecordKind;
  key: string;
  row: RecordRow;
  vector: Float32Array | undefined;
}

/** What a write returns, as recorded: where the record went, without its value and vector (those are in the log, sealed). */
function resultOf(value: unknown): unknown {
  if (typeof value === "object" && value !== null && "row" in value) {
    const { ns, key, row } = value as WrittenRow;
    const written: Record<string, unknown> = { namespace: ns, key, version: row.version, at: row.at };
    if (row.expiresAt !== undefined) written["expiresAt"] = row.expiresAt;
    return written;
  }
  if (typeof value === "boolean") return { deleted: value };
  if (typeof value === "number") return { erased: value };
  return value;
}

function refusalRow(e: EffectWrite, err: MaxwellError): EffectRow {
  const error: EffectRow["error"] = { code: err.code, message: err.message };
  if (err.detail !== undefined) error.detail = err.detail;
  return { effect: e.effect, op: e.op, namespace: e.namespace, ok: false, error };
}

function outcomeOf(seq: number, row: EffectRow): EffectOutcome {
  const out: EffectOutcome = { seq, effect: row.effect, op: row.op, namespace: row.namespace, ok: row.ok };
  if (row.result !== undefined) out.result = row.result;
  if (row.error !== undefined) out.error = row.error as WireError;
  return out;
}

function differentLog(seq: number, recorded: string, given: string): MaxwellError {
  return new MaxwellError(
    ErrorCode.Conflict,
    `log sequence ${seq} was applied as effect ${recorded}, not ${given}: this memory store was built from another log; move it away and let the service rebuild it`,
    { detail: { seq, recorded, given } },
  );
}

/** Names the failing operation of a batch in its error. */
function inBatch(err: unknown, index: number): MaxwellError {
  const e = MaxwellError.from(err);
  return new MaxwellError(e.code, `batch operation ${index}: ${e.message}`, { cause: err, detail: { ...e.detail, index } });
}

function conflict(ns: NamespaceId, key: string, expected: number, actual: number): MaxwellError {
  const found = actual === 0 ? "it does not exist" : `it is at version ${actual}`;
  return new MaxwellError(ErrorCode.Conflict, `${ns} ${JSON.stringify(key)}: expected version ${expected}, but ${found}`, {
    detail: { namespace: ns, key, expectedVersion: expected, actualVersion: actual },
  });
}

class MemoryStoreImpl implements MemoryStore {
  constructor(private readonly core: StoreCore) {}

  get path(): string {
    return this.core.path;
  }

  private draft(req: RecordInput & WriteContext & { namespace: string }): Draft {
    if (typeof req !== "object" || req === null) {
      throw new MaxwellError(ErrorCode.BadRequest, "invalid request: expected an object");
    }
    const ns = parseNamespace(req.namespace);
    checkValue(req.value);
    const text = checkText(req.text);
    const tags = checkTags(req.tags);
    const vector = req.vector === undefined ? undefined : checkVector(req.vector);
    const ttl = checkTtl(req.ttlMs);
    const provenance = checkProvenance(req.provenance);
    const at = req.at === undefined ? this.core.now() : checkTime(req.at, "at");
    const row: Omit<RecordRow, "version"> = { at, tags, value: req.value, provenance, vector: vector !== undefined };
    if (ttl !== undefined) row.expiresAt = at + ttl;
    if (text !== undefined) row.text = text;
    return { ns, row, vector, seq: checkSeq(req.seq) };
  }

  /** Refuses a vector whose dimension differs from the namespace's. */
  private checkDimension(tx: WriteTx, ns: NamespaceId, vector: Float32Array | undefined): void {
    if (vector === undefined) return;
    const meta = tx.meta(ns);
    if (meta.dimension !== undefined && meta.dimension !== vector.length) {
      throw new MaxwellError(
        ErrorCode.BadRequest,
        `vector has dimension ${vector.length}; namespace ${ns} holds vectors of dimension ${meta.dimension}`,
        { detail: { field: "vector", expected: meta.dimension, actual: vector.length } },
      );
    }
  }

  /** Fixes the namespace's vector dimension on first use (after {@link checkDimension}). */
  private claimDimension(tx: WriteTx, ns: NamespaceId, vector: Float32Array | undefined): void {
    if (vector === undefined) return;
    const meta = tx.meta(ns);
    if (meta.dimension === undefined) meta.dimension = vector.length;
  }

  private rowOf(draft: Draft, version: number): RecordRow {
    const { at, expiresAt, tags, text, value, provenance, vector } = draft.row;
    const row: RecordRow = { version, at, tags, value, provenance, vector };
    if (expiresAt !== undefined) row.expiresAt = expiresAt;
    if (text !== undefined) row.text = text;
    return row;
  }

  get(namespace: string, key: string, kind: RecordKind = RecordKind.Value): MemoryRecord | undefined {
    this.core.assertOpen();
    const ns = parseNamespace(namespace);
    checkKey(key);
    checkKind(kind);
    const row = this.core.row(ns, kind, key);
    if (row === undefined || !visible(row.expiresAt, this.core.now())) return undefined;
    return this.core.toRecord(ns, kind, key, row);
  }

  // Async so that bad input rejects the returned promise rather than throwing at the call.
  async put(req: PutRequest): Promise<MemoryRecord> {
    const plan = this.planPut(req);
    return this.core.write((tx) => this.written(plan(tx)));
  }

  async append(req: AppendRequest): Promise<MemoryRecord> {
    const plan = this.planAppend(req);
    return this.core.write((tx) => this.written(plan(tx)));
  }

  async delete(req: DeleteRequest): Promise<boolean> {
    return this.core.write(this.planDelete(req));
  }

  async batch(ops: readonly BatchOp[]): Promise<(MemoryRecord | boolean)[]> {
    if (!Array.isArray(ops)) throw new MaxwellError(ErrorCode.BadRequest, "invalid batch: expected an array of operations");
    const plans = ops.map((op: BatchOp, i) => {
      try {
        if (typeof op !== "object" || op === null) throw new MaxwellError(ErrorCode.BadRequest, "invalid operation: expected an object");
        switch (op.op) {
          case "put": {
            const plan = this.planPut(op);
            return (tx: WriteTx) => this.written(plan(tx));
          }
          case "append": {
            const plan = this.planAppend(op);
            return (tx: WriteTx) => this.written(plan(tx));
          }
          case "delete":
            return this.planDelete(op);
          default:
            throw new MaxwellError(ErrorCode.BadRequest, `unknown op ${JSON.stringify((op as { op: unknown }).op)}: expected put, append or delete`);
        }
      } catch (err) {
        throw inBatch(err, i);
      }
    });
    return this.core.write((tx) =>
      plans.map((plan, i) => {
        try {
          return plan(tx);
        } catch (err) {
          throw inBatch(err, i);
        }
      }),
    );
  }

  /** Validates a put now; the returned plan runs inside the write. */
  private planPut(req: PutRequest): (tx: WriteTx) => WrittenRow {
    const draft = this.draft(req);
    const key = checkKey(req.key);
    const expected = checkExpectedVersion(req.expectedVersion);
    const { ns } = draft;
    return (tx) => {
      // Checks first, changes after: a plan that throws has changed nothing (see applyEffects).
      const stored = this.core.row(ns, RecordKind.Value, key);
      const current = stored !== undefined && visible(stored.expiresAt, draft.row.at) ? stored : undefined;
      if (expected !== undefined && expected !== (current?.version ?? 0)) throw conflict(ns, key, expected, current?.version ?? 0);
      this.checkDimension(tx, ns, draft.vector);
      this.claimDimension(tx, ns, draft.vector);
      if (stored !== undefined) this.core.remove(tx, ns, RecordKind.Value, key, stored);
      const meta = tx.meta(ns);
      meta.revision += 1;
      const row = this.rowOf(draft, meta.revision);
      this.core.insert(tx, ns, RecordKind.Value, key, row, draft.vector);
      if (draft.seq !== undefined) tx.appliedSeq = draft.seq;
      return { ns, kind: RecordKind.Value, key, row, vector: draft.vector };
    };
  }

  private planAppend(req: AppendRequest): (tx: WriteTx) => WrittenRow {
    const draft = this.draft(req);
    const { ns } = draft;
    return (tx) => {
      this.checkDimension(tx, ns, draft.vector);
      this.claimDimension(tx, ns, draft.vector);
      const meta = tx.meta(ns);
      meta.revision += 1;
      const row = this.rowOf(draft, meta.revision);
      const key = episodeId(row.at, row.version);
      this.core.insert(tx, ns, RecordKind.Episode, key, row, draft.vector);
      if (draft.seq !== undefined) tx.appliedSeq = draft.seq;
      return { ns, kind: RecordKind.Episode, key, row, vector: draft.vector };
    };
  }

  private planDelete(req: DeleteRequest): (tx: WriteTx) => boolean {
    if (typeof req !== "object" || req === null) throw new MaxwellError(ErrorCode.BadRequest, "invalid request: expected an object");
    const ns = parseNamespace(req.namespace);
    const key = checkKey(req.key);
    const kind = req.kind === undefined ? RecordKind.Value : checkKind(req.kind);
    const expected = checkExpectedVersion(req.expectedVersion);
    const seq = checkSeq(req.seq);
    const at = req.at === undefined ? undefined : checkTime(req.at, "at");
    return (tx) => {
      const stored = this.core.row(ns, kind, key);
      const current = stored !== undefined && visible(stored.expiresAt, at ?? this.core.now()) ? stored : undefined;
      if (expected !== undefined && expected !== (current?.version ?? 0)) throw conflict(ns, key, expected, current?.version ?? 0);
      if (stored !== undefined) this.core.remove(tx, ns, kind, key, stored);
      if (seq !== undefined) tx.appliedSeq = seq;
      return current !== undefined;
    };
  }

  /** The record just written, as a read would return it (without reading it back). */
  private written({ ns, kind, key, row, vector }: WrittenRow): MemoryRecord {
    const record = this.core.toRecord(ns, kind, key, { ...row, vector: false });
    if (vector !== undefined) record.vector = Array.from(vector);
    return record;
  }

  episodes(namespace: string, range: EpisodeRange = {}): MemoryRecord[] {
    this.core.assertOpen();
    const ns = parseNamespace(namespace);
    const from = range.from === undefined ? undefined : checkTime(range.from, "from");
    const to = range.to === undefined ? undefined : checkTime(range.to, "to");
    const limit = range.limit === undefined ? 100 : checkCount(range.limit, "limit");
    const all = prefixRange(ns, RecordKind.Episode);
    const low = from === undefined ? all.start : [ns, RecordKind.Episode, episodeTimePrefix(from)];
    const high = to === undefined ? all.end : [ns, RecordKind.Episode, episodeTimePrefix(to)];
    const reverse = range.reverse === true;
    const now = this.core.now();
    const out: MemoryRecord[] = [];
    for (const { key, value } of this.core.tables.records.getRange(reverse ? { start: high, end: low, reverse } : { start: low, end: high })) {
      const row = decodeRecordRow(value);
      if (!visible(row.expiresAt, now)) continue;
      out.push(this.core.toRecord(ns, RecordKind.Episode, (key as string[])[2] as string, row));
      if (out.length === limit) break;
    }
    return out;
  }

  list(namespace: string, req: ListRequest = {}): MemoryRecord[] {
    this.core.assertOpen();
    const ns = parseNamespace(namespace);
    const limit = req.limit === undefined ? 100 : checkCount(req.limit, "limit");
    const prefix = req.prefix === undefined || req.prefix === "" ? "" : checkKey(req.prefix, "prefix");
    const after = req.after === undefined ? undefined : checkKey(req.after, "after");
    const all = prefixRange(ns, RecordKind.Value);
    let start = prefix === "" ? all.start : recordKey(ns, RecordKind.Value, prefix);
    if (after !== undefined && after > prefix) start = recordKey(ns, RecordKind.Value, after);
    const now = this.core.now();
    const out: MemoryRecord[] = [];
    for (const { key, value } of this.core.tables.records.getRange({ start, end: all.end })) {
      const k = (key as string[])[2] as string;
      if (k === after) continue;
      if (!k.startsWith(prefix)) break;
      const row = decodeRecordRow(value);
      if (!visible(row.expiresAt, now)) continue;
      out.push(this.core.toRecord(ns, RecordKind.Value, k, row));
      if (out.length === limit) break;
    }
    return out;
  }

  namespaces(): NamespaceInfo[] {
    this.core.assertOpen();
    return this.core.namespaces().map((ns) => this.infoOf(ns));
  }

  count(namespace: string): { kv: number; episodes: number } {
    this.core.assertOpen();
    const ns = parseNamespace(namespace);
    const now = this.core.now();
    const out = { kv: 0, episodes: 0 };
    for (const { key, value } of this.core.tables.records.getRange(prefixRange(ns))) {
      if (!visible(decodeRecordRow(value).expiresAt, now)) continue;
      if ((key as string[])[1] === RecordKind.Episode) out.episodes++;
      else out.kv++;
    }
    return out;
  }

  info(namespace: string): NamespaceInfo {
    this.core.assertOpen();
    return this.infoOf(parseNamespace(namespace));
  }

  private infoOf(ns: NamespaceId): NamespaceInfo {
    const meta = this.core.meta(ns);
    const info: NamespaceInfo = { namespace: ns, revision: meta.revision };
    if (meta.dimension !== undefined) info.dimension = meta.dimension;
    return info;
  }

  async eraseNamespace(namespace: string, opts: { seq?: number } = {}): Promise<number> {
    const plan = this.planErase(namespace);
    const seq = checkSeq(opts.seq);
    return this.core.write((tx) => {
      const erased = plan(tx);
      tx.appliedSeq = seq;
      return erased;
    });
  }

  private planErase(namespace: string): (tx: WriteTx) => number {
    const ns = parseNamespace(namespace);
    return (tx) => {
      let erased = 0;
      const rows = [...this.core.tables.records.getRange(prefixRange(ns))].map(({ key, value }) => ({ key: key as [NamespaceId, RecordKind, string], row: decodeRecordRow(value) }));
      for (const { key, row } of rows) {
        this.core.remove(tx, ns, key[1], key[2], row);
        erased++;
      }
      const meta = tx.meta(ns);
      delete meta.dimension;
      tx.deltas.push({ op: "drop", ns });
      return erased;
    };
  }

  async applyEffects(effects: readonly EffectWrite[], opts: { resumeSeq?: number } = {}): Promise<EffectOutcome[]> {
    if (!Array.isArray(effects)) throw new MaxwellError(ErrorCode.BadRequest, "invalid effects: expected an array");
    const resume = checkSeq(opts.resumeSeq);
    // Imports are parsed (asynchronously) before the commit, like every other validation.
    const imports = new Map<EffectWrite, ParsedImport | MaxwellError>();
    for (const e of effects) {
      const w = e.write;
      if ("op" in w && w.op === "import") imports.set(e, await parseImport(w.lines).catch((err: unknown) => MaxwellError.from(err, ErrorCode.BadRequest)));
    }
    // Validation happens here, outside the commit; a write that fails it is a refusal like any other.
    const plans = effects.map((e) => {
      const seq = checkSeq(e.seq) ?? 0;
      try {
        const w = e.write;
        if ("error" in w) throw w.error;
        switch (w.op) {
          case "put":
            return { e, seq, plan: this.planPut({ ...w, seq: undefined }) as (tx: WriteTx) => unknown };
          case "append":
            return { e, seq, plan: this.planAppend({ ...w, seq: undefined }) as (tx: WriteTx) => unknown };
          case "delete":
            return { e, seq, plan: this.planDelete({ ...w, seq: undefined }) as (tx: WriteTx) => unknown };
          case "erase":
            return { e, seq, plan: this.planErase(w.namespace) as (tx: WriteTx) => unknown };
          case "import": {
            const parsed = imports.get(e);
            if (parsed === undefined || parsed instanceof MaxwellError) throw parsed ?? new MaxwellError(ErrorCode.BadRequest, "import: nothing to import");
            return { e, seq, plan: importPlan(this.core, parsed, parseNamespace(w.namespace)) as (tx: WriteTx) => unknown };
          }
          default:
            throw new MaxwellError(ErrorCode.BadRequest, `unknown write ${JSON.stringify((w as { op: unknown }).op)}`);
        }
      } catch (err) {
        return { e, seq, refused: MaxwellError.from(err, ErrorCode.BadRequest) };
      }
    });
    return this.core.write((tx) => {
      // Outcomes are recorded only up to the highest sequence applied: above it, none to look up.
      let highest = this.core.appliedSeq();
      const out = plans.map(({ e, seq, plan, refused }): EffectOutcome => {
        const stored = seq > highest ? undefined : this.core.tables.effects.get(seq);
        if (seq > highest) highest = seq;
        if (stored !== undefined) {
          const row = decodeEffectRow(stored);
          if (row.effect !== e.effect) {
            return outcomeOf(seq, { effect: e.effect, op: e.op, namespace: e.namespace, ok: false, error: differentLog(seq, row.effect, e.effect).toWire() });
          }
          return { ...outcomeOf(seq, row), repeated: true };
        }
        let row: EffectRow;
        if (refused !== undefined) {
          row = refusalRow(e, refused);
        } else {
          try {
            row = { effect: e.effect, op: e.op, namespace: e.namespace, ok: true, result: resultOf(plan(tx)) };
          } catch (err) {
            const refusal = MaxwellError.from(err);
            // Only a write's own checks are refusals (they run before it changes anything);
            // anything else fails the whole commit.
            if (!REFUSALS.has(refusal.code)) throw err;
            row = refusalRow(e, refusal);
          }
        }
        this.core.tables.effects.putSync(seq, encodeEffectRow(row));
        if (tx.appliedSeq === undefined || seq > tx.appliedSeq) tx.appliedSeq = seq;
        return outcomeOf(seq, row);
      });
      if (resume !== undefined) tx.resumeSeq = resume;
      return out;
    });
  }

  effectOutcome(seq: number): EffectOutcome | undefined {
    this.core.assertOpen();
    const stored = this.core.tables.effects.get(checkSeq(seq) ?? 0);
    return stored === undefined ? undefined : outcomeOf(seq, decodeEffectRow(stored));
  }

  resumeSeq(): number {
    this.core.assertOpen();
    return this.core.resumeSeq();
  }

  async markResume(resumeSeq: number): Promise<void> {
    const seq = checkSeq(resumeSeq);
    await this.core.write((tx) => {
      tx.resumeSeq = seq;
    });
  }

  fact(name: string): string | undefined {
    this.core.assertOpen();
    const bytes = this.core.tables.store.get(`fact:${name}`);
    return bytes === undefined ? undefined : (unpack(bytes) as string);
  }

  async setFact(name: string, value: string): Promise<void> {
    await this.core.write(() => {
      this.core.tables.store.putSync(`fact:${name}`, pack(value));
    });
  }

  searchText(req: TextSearchRequest): SearchHit[] {
    return searchText(this.core, req);
  }

  searchVector(req: VectorSearchRequest): SearchHit[] {
    return searchVector(this.core, req);
  }

  searchHybrid(req: HybridSearchRequest): SearchHit[] {
    return searchHybrid(this.core, req);
  }

  digest(opts?: DigestOptions): string {
    return digest(this.core, opts);
  }

  exportNamespace(namespace: string): Generator<string> {
    return exportNamespace(this.core, namespace);
  }

  exportPage(namespace: string, opts: { after?: ExportCursor; maxBytes: number }): ExportPage {
    return exportPage(this.core, namespace, opts);
  }

  async checkImport(lines: string | Iterable<string> | AsyncIterable<string>, opts?: { namespace?: string }): Promise<ImportSummary> {
    return checkImport(lines, opts);
  }

  async importNamespace(lines: string | Iterable<string> | AsyncIterable<string>, opts?: ImportOptions): Promise<ImportSummary> {
    return importNamespace(this.core, lines, opts);
  }

  async compact(opts?: { batch?: number; keepEffects?: number }): Promise<CompactionReport> {
    return compact(this.core, opts);
  }

  stats(): StoreStats {
    this.core.assertOpen();
    const t = this.core.tables;
    const count = (db: { getStats(): unknown }): number => (db.getStats() as { entryCount: number }).entryCount;
    const env = this.core.env.getStats() as { lastPageNumber: number; pageSize: number };
    return {
      entries: {
        records: count(t.records),
        expiry: count(t.expiry),
        docs: count(t.docs),
        postings: count(t.postings),
        vectors: count(t.vectors),
        meta: count(t.meta),
        effects: count(t.effects),
      },
      lastPage: env.lastPageNumber,
      pageSize: env.pageSize,
    };
  }

  appliedSeq(): number {
    this.core.assertOpen();
    return this.core.appliedSeq();
  }

  close(): Promise<void> {
    return this.core.close();
  }
}
