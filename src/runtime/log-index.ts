/**
 * The log index: a projection of the log into LMDB (`<data>/index/`), so that auditing or
 * replaying one trace reads that trace's entries and a few more, not the whole log. Never a
 * source of truth: every answer is checked against the log's own bytes, and `rm -r <data>/index`
 * only costs a rebuild.
 *
 * What it maps:
 * - trace id → the sequences of its events, and of the `approval.decided` events on its holds
 *   (they carry no trace: found through the hold they decide), in a dupSort table ordered by
 *   sequence; trace ids are keys in order, so a unique prefix is a key range scan;
 * - each checkpoint's sequence → the `upTo` it signs and the sequence of the entry stored just
 *   before it (what audit compares the signed head with);
 * - the events that name a kernel key (genesis, fork); entries that cannot be decoded; `input.rejected` events by actor; and
 *   every name that appears as an event's `actor`, `to` or `name` (replay's "appears nowhere");
 * - per name, the sequences `audit principal|agent NAME` reads, chosen as `ActivityFold` chooses
 *   them: for a principal, the events with `principal` = NAME, the decisions on their holds and the
 *   decisions it made (`by`); for an agent, the events with `actor` = NAME, the decisions on its
 *   holds and the messages and replies delivered to it (`to`). Each decision on a hold also maps to
 *   the hold's own sequence, which a summary from `--since` on needs when the hold came before it.
 *
 * A watermark (the last sequence indexed and the hash of that entry) says where catching up
 * starts; when the entry there no longer has that hash (another log: a data dir reset, another
 * server) the index is dropped and rebuilt. Entries and the watermark move in one LMDB write
 * transaction, which re-reads the watermark first, so any number of processes (the daemon's
 * follower, CLI commands) can catch up at once without adding an entry twice or skipping one.
 *
 * @example
 * ```ts
 * const index = LogIndex.open(layout.index);
 * await index.catchUp(source);
 * const audit = auditTrace(await indexedTraceEvidence(index, source, "4bf92f35", verifySignature));
 * ```
 */
import { open, type Database, type RootDatabase } from "lmdb";
import { ErrorCode, EventType, MaxwellError, decodeMap, entryHash, type LogEvent, type SignatureCheck, type StoredEntry } from "../protocol/mod.js";
import { ActivityFold, TraceCollector, type ActivitySummary, type Since, type SummarySubject, type TraceEvidence } from "./audit.js";

/** What the index reads the log through: the CLI's log source, the daemon's admin client. */
export interface LogReader {
  /** Entries from `from` on, in order, up to the log's end at the time of the call. */
  entries(opts: { from: number; follow: false }): AsyncIterable<StoredEntry>;
  /** The entries stored at `seqs`, in ascending order; sequences the log does not hold are left out. */
  entriesAt(seqs: readonly number[]): Promise<StoredEntry[]>;
}

/** The last entry indexed. */
export interface Watermark {
  seq: number;
  /** {@link entryHash} of that entry. */
  hash: string;
}

/** What one catch-up did. */
export interface CatchUpResult {
  /** Entries added. */
  indexed: number;
  /** The index described another log and was dropped first. */
  rebuilt: boolean;
  watermark: Watermark | undefined;
}

/** A checkpoint as the index keeps it. */
export interface IndexedCheckpoint {
  seq: number;
  upTo: number;
  /** Sequence of the entry stored just before the checkpoint (0 for none). */
  previous: number;
}

/** Bumped when what the index stores changes: an index of another format is rebuilt. */
const FORMAT = 2;
/** Entries per write transaction while catching up. */
const BATCH = 2000;
/** Longer keys are not indexed (LMDB keys are bounded; no real trace id or name comes close). */
const MAX_KEY = 256;

const WATERMARK = "watermark";
const FORMAT_KEY = "format";

type Key = string | number;

export class LogIndex {
  private readonly meta: Database<unknown, string>;
  /** trace → seq (dupSort). */
  private readonly traces: Database<number, string>;
  /** approval.requested id → its trace. */
  private readonly holds: Database<string, string>;
  /** checkpoint seq → [upTo, previous seq]. */
  private readonly checkpoints: Database<[number, number], number>;
  /** seq of every event that names a kernel key (genesis, fork) → 1. */
  private readonly keyEvents: Database<number, number>;
  /** seq of an entry that does not decode → 1. */
  private readonly undecodableSeqs: Database<number, number>;
  /** actor → seq of its input.rejected events (dupSort). */
  private readonly rejected: Database<number, string>;
  /** actor, recipient or identity name → first seq it appears at. */
  private readonly names: Database<number, string>;
  /** principal → seq of each event its summary reads (dupSort). */
  private readonly principalActivity: Database<number, string>;
  /** agent → seq of each event its summary reads (dupSort). */
  private readonly agentActivity: Database<number, string>;
  /** approval.requested id (an event id: unique in the log) → [its seq, its actor, its principal] ("" when absent). */
  private readonly holdOwners: Database<[number, string, string], string>;
  /** seq of an approval.decided on an indexed hold → seq of that hold. */
  private readonly decidedHolds: Database<number, number>;
  private readonly tables: Array<Database<unknown, Key>>;
  /** Entries read back to compare with the log, for tests and the bench. */
  fetched = 0;
  /** Names known to be in `names`, valid while the watermark is the one this instance last wrote. */
  private readonly knownNames = new Set<string>();
  private wrote: number | undefined;

  private constructor(
    readonly path: string,
    private readonly env: RootDatabase<unknown, Key>,
  ) {
    const dup = { dupSort: true, encoding: "ordered-binary" as const };
    this.meta = env.openDB<unknown, string>("meta", {});
    this.traces = env.openDB<number, string>("traces", dup);
    this.holds = env.openDB<string, string>("holds", { encoding: "string" });
    this.checkpoints = env.openDB<[number, number], number>("checkpoints", {});
    this.keyEvents = env.openDB<number, number>("key-events", {});
    this.undecodableSeqs = env.openDB<number, number>("undecodable", {});
    this.rejected = env.openDB<number, string>("rejected", dup);
    this.names = env.openDB<number, string>("names", {});
    this.principalActivity = env.openDB<number, string>("principal-activity", dup);
    this.agentActivity = env.openDB<number, string>("agent-activity", dup);
    this.holdOwners = env.openDB<[number, string, string], string>("hold-owners", {});
    this.decidedHolds = env.openDB<number, number>("decided-holds", {});
    this.tables = [
      this.meta,
      this.traces,
      this.holds,
      this.checkpoints,
      this.keyEvents,
      this.undecodableSeqs,
      this.rejected,
      this.names,
      this.principalActivity,
      this.agentActivity,
      this.holdOwners,
      this.decidedHolds,
    ] as Array<Database<unknown, Key>>;
    if (this.meta.get(FORMAT_KEY) !== FORMAT) {
      env.transactionSync(() => {
        if (this.meta.get(FORMAT_KEY) === FORMAT) return;
        this.clear();
        void this.meta.put(FORMAT_KEY, FORMAT);
      });
    }
  }

  /** Opens (creating it when missing) the index in directory `path`. */
  static open(path: string): LogIndex {
    let env: RootDatabase<unknown, Key>;
    try {
      env = open<unknown, Key>({ path, maxDbs: 16 });
    } catch (err) {
      throw new MaxwellError(ErrorCode.Unavailable, `cannot open the log index at ${path}: ${(err as Error).message} (it is disposable: remove the folder to rebuild it)`, { cause: err });
    }
    return new LogIndex(path, env);
  }

  watermark(): Watermark | undefined {
    return this.meta.get(WATERMARK) as Watermark | undefined;
  }

  /**
   * Indexes the entries after the watermark, up to the log's end. Drops the index first when the
   * entry at the watermark is not the one indexed (`verify: false` skips that read, for a follower
   * that checked once and has read on ever since).
   */
  async catchUp(reader: LogReader, opts: { verify?: boolean; signal?: AbortSignal } = {}): Promise<CatchUpResult> {
    let rebuilt = false;
    const seen = this.watermark();
    if (seen && opts.verify !== false) {
      const [at] = await reader.entriesAt([seen.seq]);
      this.fetched += at ? 1 : 0;
      if (opts.signal?.aborted) return { indexed: 0, rebuilt, watermark: undefined };
      if (!at || at.seq !== seen.seq || entryHash(at.subject, at.data) !== seen.hash) {
        this.env.transactionSync(() => {
          // Another process may have rebuilt it meanwhile: clear only what was checked.
          const now = this.watermark();
          if (now?.seq === seen.seq && now.hash === seen.hash) this.clear();
        });
        rebuilt = true;
      }
    }
    let indexed = 0;
    let batch: StoredEntry[] = [];
    // Nothing is written once `signal` aborts: the owner may be closing the index.
    const flush = (): boolean => {
      if (opts.signal?.aborted) return false;
      indexed += this.apply(batch);
      batch = [];
      return true;
    };
    for await (const entry of reader.entries({ from: (this.watermark()?.seq ?? 0) + 1, follow: false })) {
      batch.push(entry);
      if (batch.length >= BATCH && !flush()) break;
    }
    if (batch.length > 0) flush();
    return { indexed, rebuilt, watermark: opts.signal?.aborted ? undefined : this.watermark() };
  }

  /** Adds entries in one write transaction, skipping those at or below the watermark; returns how many it added. */
  private apply(entries: readonly StoredEntry[]): number {
    return this.env.transactionSync(() => {
      const mark = this.watermark();
      // Another process wrote since (or rebuilt): what this one remembers may be gone.
      if (mark?.seq !== this.wrote) this.knownNames.clear();
      let previous = mark?.seq ?? 0;
      let added = 0;
      let last: StoredEntry | undefined;
      for (const entry of entries) {
        if (entry.seq <= previous) continue;
        this.add(entry, previous);
        previous = entry.seq;
        last = entry;
        added += 1;
      }
      if (last) void this.meta.put(WATERMARK, { seq: last.seq, hash: entryHash(last.subject, last.data) } satisfies Watermark);
      this.wrote = last?.seq ?? mark?.seq;
      return added;
    });
  }

  /** Indexes one entry (inside a write transaction). `previous` is the sequence of the entry before it. */
  private add(entry: StoredEntry, previous: number): void {
    let e: Record<string, unknown>;
    try {
      e = decodeMap(entry.data);
    } catch {
      void this.undecodableSeqs.put(entry.seq, 1);
      return;
    }
    const seq = entry.seq;
    const type = e["type"];
    // Genesis and fork events name the kernel key that signs the checkpoints after them.
    if (typeof e["kernelKey"] === "string") void this.keyEvents.put(seq, 1);
    const trace = keyOf(e["trace"]);
    const id = keyOf(e["id"]);
    if (trace !== undefined) {
      void this.traces.put(trace, seq);
      if (type === EventType.ApprovalRequested && id !== undefined) void this.holds.put(id, trace);
    }
    // What ActivityFold counts for a principal or an agent (a pair repeated is stored once).
    const actor = keyOf(e["actor"]);
    const principal = keyOf(e["principal"]);
    if (actor !== undefined) void this.agentActivity.put(actor, seq);
    if (principal !== undefined) void this.principalActivity.put(principal, seq);
    if (type === EventType.ApprovalRequested && id !== undefined) void this.holdOwners.put(id, [seq, actor ?? "", principal ?? ""]);
    switch (type) {
      case EventType.Checkpoint:
        void this.checkpoints.put(seq, [typeof e["upTo"] === "number" ? e["upTo"] : -1, previous]);
        break;
      case EventType.ApprovalDecided: {
        const approval = keyOf(e["approval"]);
        const held = approval !== undefined ? this.holds.get(approval) : undefined;
        if (held !== undefined) void this.traces.put(held, seq);
        const owner = approval !== undefined ? this.holdOwners.get(approval) : undefined;
        if (owner !== undefined) {
          void this.decidedHolds.put(seq, owner[0]);
          if (owner[1] !== "") void this.agentActivity.put(owner[1], seq);
          if (owner[2] !== "") void this.principalActivity.put(owner[2], seq);
        }
        const by = keyOf(e["by"]);
        if (by !== undefined) void this.principalActivity.put(by, seq);
        break;
      }
      case EventType.Message:
      case EventType.Reply: {
        const to = keyOf(e["to"]);
        if (to !== undefined) void this.agentActivity.put(to, seq);
        break;
      }
      case EventType.Rejected: {
        const actor = keyOf(e["actor"]);
        if (actor !== undefined) void this.rejected.put(actor, seq);
        break;
      }
      default:
        break;
    }
    for (const field of ["actor", "to", "name"]) {
      const name = keyOf(e[field]);
      if (name === undefined || this.knownNames.has(name)) continue;
      if (this.names.get(name) === undefined) void this.names.put(name, seq);
      this.knownNames.add(name);
    }
  }

  /** Empties every table (inside a write transaction). */
  private clear(): void {
    for (const t of this.tables) t.clearSync();
    this.knownNames.clear();
    void this.meta.put(FORMAT_KEY, FORMAT);
  }

  // ------------------------------------------------------------------------------------ reading

  /** Full trace ids starting with `prefix`, in order of their first event in the log. */
  tracesMatching(prefix: string): string[] {
    const found: Array<{ trace: string; first: number }> = [];
    for (const trace of this.traces.getKeys({ start: prefix })) {
      if (!trace.startsWith(prefix)) break;
      const first = this.traces.getValues(trace, { limit: 1 })[Symbol.iterator]().next();
      found.push({ trace, first: first.done ? Number.MAX_SAFE_INTEGER : first.value });
    }
    return found.sort((a, b) => a.first - b.first).map((f) => f.trace);
  }

  /**
   * The one trace `prefix` names. Throws `not_found` when none and `bad_request` when several, with
   * the words `TraceCollector` uses.
   */
  resolveTrace(prefix: string): string {
    if (prefix.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "a trace id (or a prefix of one) is needed");
    const matched = this.tracesMatching(prefix);
    if (matched.length === 0) throw new MaxwellError(ErrorCode.NotFound, `no event of trace ${prefix} is in the log`);
    if (matched.length > 1) {
      const some = matched.slice(0, 5).join(", ");
      throw new MaxwellError(ErrorCode.BadRequest, `trace prefix ${prefix} matches ${matched.length} traces (${some}${matched.length > 5 ? ", …" : ""}); give more of the id`);
    }
    return matched[0] as string;
  }

  /** Sequences of a trace's events and of the decisions on its holds, ascending. */
  seqsOf(trace: string): number[] {
    return [...this.traces.getValues(trace)];
  }

  /** Checkpoints written after `seq`, in log order. */
  *checkpointsAfter(seq: number): Generator<IndexedCheckpoint> {
    for (const { key, value } of this.checkpoints.getRange({ start: seq + 1 })) yield { seq: key, upTo: value[0], previous: value[1] };
  }

  /** Sequences of the events that name a kernel key (genesis, fork), ascending. */
  keyEventSeqs(): number[] {
    return [...this.keyEvents.getKeys()];
  }

  /** Sequences of entries that did not decode, ascending. */
  undecodable(): number[] {
    return [...this.undecodableSeqs.getKeys()];
  }

  /** Sequences of the `input.rejected` events naming `actor`, ascending. */
  rejectedOf(actor: string): number[] {
    return [...this.rejected.getValues(actor)];
  }

  /**
   * Sequences of the events a summary of `subject` from sequence `from` on reads, ascending: those
   * it counts from `from` on, and the subject's holds before `from` that those decide (the summary
   * counts a decision on a hold it has seen). Empty for a name the index cannot hold
   * ({@link isIndexableName}).
   */
  activityOf(subject: SummarySubject, from = 1): number[] {
    if (!isIndexableName(subject.name)) return [];
    const table = subject.kind === "principal" ? this.principalActivity : this.agentActivity;
    const seqs = from <= 1 ? [...table.getValues(subject.name)] : [...table.getValues(subject.name, { start: from })];
    if (from <= 1) return seqs;
    const holds = new Set<number>();
    for (const seq of seqs) {
      const hold = this.decidedHolds.get(seq);
      // A decision counted only because the principal made it (`by`) is on another's hold.
      if (hold !== undefined && hold < from && firstOf(table.getValues(subject.name, { start: hold, limit: 1 })) === hold) holds.add(hold);
    }
    return holds.size === 0 ? seqs : [...holds, ...seqs].sort((a, b) => a - b);
  }

  /** The sequence of the hold the `approval.decided` event at `seq` decides, when that hold is in the log before it. */
  holdOfDecision(seq: number): number | undefined {
    return this.decidedHolds.get(seq);
  }

  /** Whether `name` appears in the log as an event's actor, recipient or identity name. */
  mentions(name: string): boolean {
    return this.names.get(name) !== undefined;
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}

function keyOf(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_KEY ? value : undefined;
}

function firstOf<T>(values: Iterable<T>): T | undefined {
  for (const v of values) return v;
  return undefined;
}

/** Whether the index keeps postings for `name` (empty names and names over 256 characters it does not). */
export function isIndexableName(name: string): boolean {
  return keyOf(name) !== undefined;
}

/**
 * The evidence `maxwell audit trace` needs, read through the index: the entries a full scan's
 * {@link TraceCollector} would keep, fed to one in log order, so the result is the same. These are
 * the events that name a kernel key (genesis, fork), entries that do not decode (reported), the trace's
 * events and the decisions on its holds, and for each of them the first checkpoint after the
 * trace's first event that covers it, with the entry stored just before that checkpoint (the head
 * it signs). The index must be caught up.
 */
export async function indexedTraceEvidence(index: LogIndex, reader: LogReader, prefix: string, check: SignatureCheck): Promise<TraceEvidence> {
  const trace = index.resolveTrace(prefix);
  const seqs = index.seqsOf(trace);
  const wanted = new Set<number>(seqs);
  const first = seqs[0] as number;
  let uncovered = seqs;
  for (const cp of index.checkpointsAfter(first)) {
    if (uncovered.length === 0) break;
    const rest = uncovered.filter((s) => s > cp.upTo);
    if (rest.length === uncovered.length) continue;
    wanted.add(cp.seq);
    if (cp.previous > 0) wanted.add(cp.previous);
    uncovered = rest;
  }
  for (const seq of index.keyEventSeqs()) wanted.add(seq);
  for (const seq of index.undecodable()) wanted.add(seq);
  const entries = await reader.entriesAt([...wanted]);
  index.fetched += entries.length;
  const collector = new TraceCollector(trace, check);
  for (const entry of entries.sort((a, b) => a.seq - b.seq)) collector.add(entry);
  return collector.result();
}

/** A summary read through the index, with how many log entries do not decode. */
export interface IndexedActivity {
  summary: ActivitySummary;
  /** Entries of the whole log that could not be decoded, as a full read counts them. */
  undecodable: number;
}

/**
 * What `maxwell audit principal|agent NAME [--since]` prints, read through the index: the
 * subject's postings fed to an {@link ActivityFold} in log order, so the summary is the one a full
 * read gives. From `--since SEQ` on, postings start at SEQ, and the holds (before SEQ) of decisions
 * after it are fetched too: the fold needs them to count those decisions. From `--since TIME` on,
 * every posting is fetched and the fold drops what came before. The index must be caught up, and
 * `subject.name` indexable ({@link isIndexableName}).
 */
export async function indexedActivity(index: LogIndex, reader: LogReader, subject: SummarySubject, since?: Since): Promise<IndexedActivity> {
  if (!isIndexableName(subject.name)) throw new MaxwellError(ErrorCode.BadRequest, `the log index holds no activity of a name of ${subject.name.length} characters`);
  const entries = await reader.entriesAt(index.activityOf(subject, since !== undefined && "seq" in since ? since.seq : 1));
  index.fetched += entries.length;
  const undecodable = new Set(index.undecodable());
  const fold = new ActivityFold(subject, since);
  for (const entry of entries.sort((a, b) => a.seq - b.seq)) {
    let event: LogEvent;
    try {
      event = decodeMap(entry.data) as unknown as LogEvent;
    } catch {
      undecodable.add(entry.seq);
      continue;
    }
    fold.add(event);
  }
  return { summary: fold.result(), undecodable: undecodable.size };
}

/**
 * The entries `maxwell replay agent NAME --trace PREFIX` needs, through the index: the events of
 * every trace the prefix names, the decisions on their holds, and the agent's rejected syscalls
 * (replay counts them), ascending. The index must be caught up.
 */
export async function indexedReplayEntries(index: LogIndex, reader: LogReader, agent: string, prefix: string): Promise<StoredEntry[]> {
  const wanted = new Set<number>(index.rejectedOf(agent));
  for (const trace of index.tracesMatching(prefix)) for (const seq of index.seqsOf(trace)) wanted.add(seq);
  const entries = await reader.entriesAt([...wanted]);
  index.fetched += entries.length;
  return entries.sort((a, b) => a.seq - b.seq);
}

/**
 * The entries `maxwell replay agent NAME [--from SEQ] [--to SEQ]` needs, through the index: from
 * `from` on, what the agent did and was delivered (the same entries `audit agent` reads: its
 * syscalls and their outcomes, its deliveries and replies, the decisions on its holds, its
 * rejected syscalls), ascending. The index must be caught up.
 */
export async function indexedAgentEntries(index: LogIndex, reader: LogReader, agent: string, from = 1): Promise<StoredEntry[]> {
  const entries = await reader.entriesAt(index.activityOf({ kind: "agent", name: agent }, from));
  index.fetched += entries.length;
  return entries.sort((a, b) => a.seq - b.seq);
}

/**
 * Keeps the index caught up with a log that grows: the daemon runs one. Catches up at start
 * (checking the watermark), then every `pollMs`; a failed read (the kernel restarting) is retried
 * with the watermark checked again.
 */
export class LogIndexFollower {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly index: LogIndex,
    private readonly reader: LogReader,
    /** `onCatchUp` is called after every catch-up that succeeded, `onError` after every one that failed. */
    private readonly opts: { pollMs?: number; onError?: (err: unknown) => void; onCatchUp?: (r: CatchUpResult) => void } = {},
  ) {}

  start(): void {
    this.running ??= this.loop();
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    let verify = true;
    while (!signal.aborted) {
      try {
        const r = await this.index.catchUp(this.reader, { verify, signal });
        verify = false;
        if (!signal.aborted) this.opts.onCatchUp?.(r);
      } catch (err) {
        verify = true;
        if (!signal.aborted) this.opts.onError?.(err);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.opts.pollMs ?? 1000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /**
   * Stops following and closes the index. A read under way is not waited for beyond `graceMs`
   * (the kernel may be gone): nothing is written after the stop, and the index closes once the
   * read returns.
   */
  async stop(graceMs = 2000): Promise<void> {
    this.abort.abort();
    this.wake?.();
    const closed = (this.running ?? Promise.resolve()).then(() => this.index.close());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs).unref()))]);
    clearTimeout(timer);
  }
}
