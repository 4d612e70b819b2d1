/**
 * The store as a projection of the log: how one logged memory write (an `effect.started` event
 * with kind `mem`) becomes a change to the store. The live path (a call from the kernel) and a
 * rebuild (reading the log) both go through {@link applyLogEvents}, so a store rebuilt from the
 * log equals the live one: same operations, same order per namespace, same times (the event's
 * `at`, never the service's clock), same provenance (the event's actor, principal, id and labels).
 *
 * Each event applies once: its outcome is recorded under its log sequence in the same commit, and
 * an event seen again is answered from that record. An event whose sealed value cannot be opened
 * because its namespace key was erased is a refusal (`not_found`, `erased: true`), not an error:
 * the erase that follows it in the log removes the namespace anyway.
 *
 * @example
 * ```ts
 * // a future `maxwell replay`: a fresh store from the whole log, proven equal by digest
 * const store = openMemoryStore({ path: scratch, noSync: true });
 * const report = await rebuildFromLog({ store, keys: NamespaceKeys.forDataDir(data), entries: admin.entries(1) });
 * console.log(report.applied, store.digest({ at }) === liveDigest);
 * ```
 */
import { ErrorCode, MaxwellError, decodeMap, joinLabels, type Labels, type LogEvent, type ServiceCall } from "../../src/protocol/mod.js";
import type { NamespaceKeys, SealedBox } from "../../src/memory/keys.js";
import { MEMORY_LOGGED_WRITE_OPS, MemoryOp } from "../../src/memory/ops.js";
import { openMemoryArgs } from "../../src/memory/sealing.js";
import type { BatchOp, EffectOutcome, EffectWrite, MemoryStore } from "./store.js";
import type { MemoryValue } from "../../src/memory/record.js";

/** The fields of a logged memory write the store needs (an `effect.started` event, or a kernel call made into one). */
export interface MemoryWriteEvent {
  type: "effect.started";
  kind: "mem";
  /** The event id: the record's `causedBy`. */
  id: string;
  seq: number;
  /** Kernel clock at the event: the write's time, and "now" for its TTL and compare-and-set. */
  at: number;
  op: string;
  target: string;
  args: unknown;
  actor: string;
  principal: string;
  labels?: Labels;
}

/** Whether an event is a memory write the store applies (put, append, delete, erase). */
export function isMemoryWriteEvent(event: unknown): event is MemoryWriteEvent {
  if (typeof event !== "object" || event === null) return false;
  const e = event as Record<string, unknown>;
  return e["type"] === "effect.started" && e["kind"] === "mem" && typeof e["op"] === "string" && MEMORY_LOGGED_WRITE_OPS.has(e["op"]);
}

/** A kernel call for a write, as the event it was logged as (the kernel copies these fields from it). */
export function eventOfCall(call: ServiceCall): MemoryWriteEvent {
  return {
    type: "effect.started",
    kind: "mem",
    id: call.effect,
    seq: call.seq,
    at: call.at,
    op: call.op,
    target: call.target,
    args: call.args,
    actor: call.actor,
    principal: call.principal,
    labels: call.labels,
  };
}

/**
 * The opened args of a logged write. A record erased on its own later (its key destroyed) still
 * took its place in the history: it is applied with a null value, so versions and revisions come
 * out as they did live, and the deletion that followed the erasure removes it again.
 */
function openWithErasedAsNull(keys: NamespaceKeys, e: MemoryWriteEvent): unknown {
  try {
    return openMemoryArgs(keys, e.op, e.target, e.args);
  } catch (err) {
    const sealed = (e.args as { sealed?: SealedBox } | null)?.sealed;
    const erased = (MaxwellError.from(err).detail as { erased?: boolean } | undefined)?.erased === true;
    // Only a record erased on its own: when its whole namespace was erased the write is refused
    // (the namespace's erase follows in the log and drops everything anyway).
    if (!erased || sealed?.record === undefined || e.op !== MemoryOp.Put || keys.isErased(e.target, sealed.key)) throw err;
    const { sealed: _sealed, ...rest } = e.args as Record<string, unknown>;
    return { ...rest, value: null };
  }
}

function refusal(e: MemoryWriteEvent, err: unknown): EffectWrite {
  return { seq: e.seq, effect: e.id, op: e.op, namespace: String(e.target), write: { error: MaxwellError.from(err, ErrorCode.BadRequest) } };
}

/**
 * The store write a logged event asks for, its sealed parts opened. Never throws: what cannot be
 * applied (an erased key, malformed args) becomes the write's recorded refusal.
 */
export function effectWriteOf(keys: NamespaceKeys, e: MemoryWriteEvent): EffectWrite {
  if (typeof e.seq !== "number" || !Number.isSafeInteger(e.seq) || e.seq < 1 || typeof e.id !== "string") {
    throw new MaxwellError(ErrorCode.BadRequest, `a memory write needs a log sequence and an effect id (got seq ${JSON.stringify(e.seq)}, id ${JSON.stringify(e.id)})`);
  }
  const base = { seq: e.seq, effect: e.id, op: e.op, namespace: String(e.target) };
  try {
    if (e.op === MemoryOp.Erase) {
      // The kernel destroyed the key before logging this; drop what this process still caches.
      keys.forget(e.target);
      return { ...base, write: { op: "erase", namespace: e.target } };
    }
    if (e.op === MemoryOp.Import) {
      // An operator's import: the export's lines, sealed under the namespace key like any value.
      const sealed = (e.args as { sealed?: SealedBox } | null)?.sealed;
      if (!sealed) throw new MaxwellError(ErrorCode.BadRequest, "import: the logged args hold no sealed lines");
      const lines = keys.open(e.target, sealed) as unknown;
      if (!Array.isArray(lines) || !lines.every((l) => typeof l === "string")) throw new MaxwellError(ErrorCode.BadRequest, "import: the sealed lines are not a list of strings");
      return { ...base, write: { op: "import", namespace: e.target, lines } };
    }
    const args = openWithErasedAsNull(keys, e);
    if (typeof args !== "object" || args === null) throw new MaxwellError(ErrorCode.BadRequest, `${e.op}: expected an object of arguments`);
    const a = args as Record<string, unknown>;
    const extra = a["labels"];
    const provenance = {
      writer: e.actor,
      principal: e.principal,
      causedBy: e.id,
      labels: joinLabels(e.labels, Array.isArray(extra) ? (extra as string[]) : undefined),
    };
    let write: BatchOp;
    switch (e.op) {
      case MemoryOp.Put:
        write = { op: "put", namespace: e.target, key: a["key"] as string, value: a["value"] as MemoryValue, at: e.at, provenance };
        break;
      case MemoryOp.Append:
        write = { op: "append", namespace: e.target, value: a["value"] as MemoryValue, at: e.at, provenance };
        break;
      case MemoryOp.Delete:
        write = { op: "delete", namespace: e.target, key: a["key"] as string, at: e.at };
        break;
      default:
        throw new MaxwellError(ErrorCode.BadRequest, `${e.op} is not a memory write`);
    }
    if (write.op !== "delete") {
      for (const field of ["tags", "vector", "ttlMs"] as const) if (a[field] !== undefined) (write as unknown as Record<string, unknown>)[field] = a[field];
      if (write.op === "put" && a["expectedVersion"] !== undefined) write.expectedVersion = a["expectedVersion"] as number;
    }
    return { ...base, write };
  } catch (err) {
    return refusal(e, err);
  }
}

/**
 * Applies logged memory writes in the order given (log order), in one commit, each exactly once.
 * `resumeSeq`, when given, records that every logged write up to it is now applied.
 */
export async function applyLogEvents(store: MemoryStore, keys: NamespaceKeys, events: readonly MemoryWriteEvent[], opts: { resumeSeq?: number } = {}): Promise<EffectOutcome[]> {
  return store.applyEffects(
    events.map((e) => effectWriteOf(keys, e)),
    opts,
  );
}

/** Applies one log event if it is a memory write; undefined for any other event. */
export async function applyLogEvent(store: MemoryStore, keys: NamespaceKeys, event: LogEvent | MemoryWriteEvent): Promise<EffectOutcome | undefined> {
  if (!isMemoryWriteEvent(event)) return undefined;
  const [outcome] = await applyLogEvents(store, keys, [event]);
  return outcome;
}

/** A log entry as stored (the kernel's read answer) or already decoded. */
export type LogInput = { seq: number; data: Uint8Array } | LogEvent | MemoryWriteEvent;

export interface RebuildReport {
  /** Log entries read. */
  read: number;
  /** Memory writes applied now (including refusals, e.g. an erased key). */
  applied: number;
  /** Of those, refused: their outcome is an error (CAS conflict, wrong dimension, erased key…). */
  refused: number;
  /** Memory writes the store had applied already. */
  repeated: number;
  /** Sequence of the last entry read (0 when none). */
  lastSeq: number;
  ms: number;
}

export interface RebuildOptions {
  store: MemoryStore;
  keys: NamespaceKeys;
  /** The log from where to start, in order (e.g. `admin.entries(store.resumeSeq() + 1)`). */
  entries: AsyncIterable<LogInput> | Iterable<LogInput>;
  /** Events per commit (default 25,000): larger batches index text more cheaply. */
  batchSize?: number;
  signal?: AbortSignal;
  /** Called after each commit. */
  onProgress?: (report: RebuildReport) => void;
}

function decodeEntry(entry: LogInput): { seq: number; event: unknown } {
  if ("data" in entry && entry.data instanceof Uint8Array) {
    let event: unknown;
    try {
      event = decodeMap(entry.data);
    } catch {
      event = undefined; // Not an event the store could apply; the log verifier reports such entries.
    }
    return { seq: entry.seq, event };
  }
  return { seq: (entry as { seq: number }).seq, event: entry };
}

/**
 * Brings the store up to date with the log: applies every memory write in `entries`, in order,
 * in batches, exactly as the live path does, skipping those already applied. After each batch it
 * records how far the log was read, so the next catch-up starts there.
 */
export async function rebuildFromLog(opts: RebuildOptions): Promise<RebuildReport> {
  const { store, keys } = opts;
  const size = Math.max(1, Math.min(opts.batchSize ?? 25_000, 100_000));
  const t0 = performance.now();
  const report: RebuildReport = { read: 0, applied: 0, refused: 0, repeated: 0, lastSeq: 0, ms: 0 };
  let batch: MemoryWriteEvent[] = [];
  let inFlight: Promise<void> | undefined;

  const commit = (events: MemoryWriteEvent[], resumeSeq: number): Promise<void> =>
    applyLogEvents(store, keys, events, { resumeSeq }).then((outcomes) => {
      for (const o of outcomes) {
        if (o.repeated) report.repeated++;
        else {
          report.applied++;
          if (!o.ok) report.refused++;
        }
      }
      report.ms = performance.now() - t0;
      opts.onProgress?.({ ...report });
    });
  // One batch is prepared while the previous one commits.
  let failure: unknown;
  const flush = async (): Promise<void> => {
    const events = batch;
    const resumeSeq = report.lastSeq;
    batch = [];
    const previous = inFlight;
    inFlight = (previous ?? Promise.resolve()).then(() => commit(events, resumeSeq)).catch((err: unknown) => {
      failure ??= err;
    });
    if (previous) await previous;
    if (failure !== undefined) throw failure;
  };

  for await (const entry of opts.entries) {
    if (opts.signal?.aborted) break;
    const { seq, event } = decodeEntry(entry);
    report.read++;
    if (seq <= report.lastSeq) {
      throw new MaxwellError(ErrorCode.BadRequest, `log entries out of order: ${seq} after ${report.lastSeq}`);
    }
    report.lastSeq = seq;
    if (isMemoryWriteEvent(event)) {
      batch.push(event.seq === seq ? event : { ...event, seq });
      if (batch.length >= size) await flush();
    }
  }
  if (batch.length > 0 || report.lastSeq > store.resumeSeq()) await flush();
  await inFlight;
  if (failure !== undefined) throw failure;
  report.ms = performance.now() - t0;
  return report;
}
