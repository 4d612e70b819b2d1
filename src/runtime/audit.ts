/**
 * Audit: what the log says about one piece of work, one principal or one agent. Pure: events in,
 * trees, summaries, text and HTML out; reading the log is the CLI's job (`maxwell audit`).
 *
 * A trace's causal tree hangs each event under the event that caused it: a message under the
 * delivery whose handling sent it (`causation`), a reply under the request it answers
 * (`inReplyTo`), an effect's outcome under the effect (`effect`), a human decision under the hold
 * it decides (`approval`; decisions carry no trace), and an action released by an approval under
 * that decision. Signed checkpoints are reported with each event they cover.
 *
 * @example
 * ```ts
 * const collector = new TraceCollector("4bf92f35", verifySignature);
 * for await (const entry of log) collector.add(entry);
 * const audit = auditTrace(collector.result());
 * process.stdout.write(formatTrace(audit));
 * ```
 */
import {
  ErrorCode,
  EventType,
  MaxwellError,
  checkpointMessage,
  decodeMap,
  entryHash,
  type ApprovalRequestedEvent,
  type CheckpointEvent,
  type Decision,
  type EventId,
  type LogEvent,
  type SignatureCheck,
  type StoredEntry,
} from "../protocol/mod.js";

// ------------------------------------------------------------------------------------ checkpoints

/** What a signed checkpoint proves about the entries up to `upTo`. */
export interface CheckpointStatus {
  /** Sequence of the checkpoint event itself. */
  seq: number;
  at: number;
  /** Last sequence it covers. */
  upTo: number;
  /** Hash of the entry at `upTo` it signs. */
  head: string;
  /** Public key it names as signer. */
  key: string;
  /** The signer is the kernel key the genesis event names. */
  genesisKey: boolean;
  /** The ed25519 signature over (upTo, head) verifies against `key`. */
  signatureValid: boolean;
  /** `head` is the hash of the stored entry at `upTo` (undefined when that entry was not read). */
  headMatches: boolean | undefined;
  /** All of the above hold. */
  verified: boolean;
}

/**
 * Checks one checkpoint event. `entryAtUpTo` is the stored entry it claims to sign, when the
 * caller has it, so the head is compared with the bytes actually stored.
 */
export function checkpointStatus(event: CheckpointEvent, genesisKey: string | undefined, check: SignatureCheck, entryAtUpTo?: StoredEntry): CheckpointStatus {
  const signatureValid = check(event.key, checkpointMessage(event.upTo, event.head), event.sig);
  const headMatches = entryAtUpTo && entryAtUpTo.seq === event.upTo ? entryHash(entryAtUpTo.subject, entryAtUpTo.data) === event.head : undefined;
  const isGenesisKey = genesisKey !== undefined && event.key === genesisKey;
  return {
    seq: event.seq,
    at: event.at,
    upTo: event.upTo,
    head: event.head,
    key: event.key,
    genesisKey: isGenesisKey,
    signatureValid,
    headMatches,
    verified: signatureValid && isGenesisKey && headMatches !== false,
  };
}

/** One sentence on a checkpoint, for people. */
export function checkpointStatement(c: CheckpointStatus): string {
  if (c.verified) {
    return `signature verifies against the genesis kernel key ${c.key.slice(0, 12)}…${c.headMatches ? ", and its head is the hash of the stored entry" : ""}`;
  }
  const why: string[] = [];
  if (!c.signatureValid) why.push("its signature does not verify");
  if (!c.genesisKey) why.push(`it is signed by ${c.key.slice(0, 12)}…, not the genesis kernel key`);
  if (c.headMatches === false) why.push(`its head is not the hash of the stored entry #${c.upTo}`);
  return `NOT VERIFIED: ${why.join("; ")} (run 'maxwell verify')`;
}

// ------------------------------------------------------------------------------------ collection

/** The events of one trace and the checkpoints after them, gathered from the log in one pass. */
export interface TraceEvidence {
  /** The full trace id. */
  trace: string;
  /** The trace's events, and the decisions on its holds, in log order. */
  events: LogEvent[];
  /** Checkpoints written after the trace's first event, in log order. */
  checkpoints: CheckpointStatus[];
  /** The kernel key the genesis event names. */
  kernelKey?: string;
  /** Sequences of entries that could not be decoded (they may belong to the trace). */
  undecodable: number[];
}

/** The trace of an event, for events caused by an actor's syscall. */
export function traceOf(e: LogEvent): string | undefined {
  return "trace" in e ? e.trace : undefined;
}

/**
 * Feeds on stored entries in log order and keeps the events of one trace (named by its id or a
 * unique prefix), the decisions on its holds, and the checkpoints that may cover them.
 */
export class TraceCollector {
  private readonly events: LogEvent[] = [];
  private readonly checkpoints: CheckpointStatus[] = [];
  private readonly holds = new Set<EventId>();
  private readonly matched = new Set<string>();
  private readonly undecodable: number[] = [];
  private kernelKey: string | undefined;
  private previous: StoredEntry | undefined;

  constructor(
    private readonly trace: string,
    private readonly check: SignatureCheck,
  ) {
    if (trace.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "a trace id (or a prefix of one) is needed");
  }

  add(entry: StoredEntry): void {
    let event: LogEvent;
    try {
      event = decodeMap(entry.data) as unknown as LogEvent;
    } catch {
      this.undecodable.push(entry.seq);
      this.previous = entry;
      return;
    }
    if (event.type === EventType.Genesis && this.kernelKey === undefined) this.kernelKey = event.kernelKey;
    // A fork hands the log over to another kernel key: checkpoints after it are signed by that one.
    if (event.type === EventType.Fork) this.kernelKey = event.kernelKey;
    if (event.type === EventType.Checkpoint && this.events.length > 0) {
      this.checkpoints.push(checkpointStatus(event, this.kernelKey, this.check, this.previous));
    }
    const trace = traceOf(event);
    if (trace !== undefined && trace.startsWith(this.trace)) {
      this.matched.add(trace);
      this.events.push(event);
      if (event.type === EventType.ApprovalRequested) this.holds.add(event.id);
    } else if (event.type === EventType.ApprovalDecided && this.holds.has(event.approval)) {
      this.events.push(event);
    }
    this.previous = entry;
  }

  /** Throws `not_found` when no event matched, `bad_request` when the prefix names several traces. */
  result(): TraceEvidence {
    if (this.matched.size === 0) throw new MaxwellError(ErrorCode.NotFound, `no event of trace ${this.trace} is in the log`);
    if (this.matched.size > 1) {
      const some = [...this.matched].slice(0, 5).join(", ");
      throw new MaxwellError(ErrorCode.BadRequest, `trace prefix ${this.trace} matches ${this.matched.size} traces (${some}${this.matched.size > 5 ? ", …" : ""}); give more of the id`);
    }
    const trace = [...this.matched][0] as string;
    const evidence: TraceEvidence = { trace, events: this.events, checkpoints: this.checkpoints, undecodable: this.undecodable };
    if (this.kernelKey !== undefined) evidence.kernelKey = this.kernelKey;
    return evidence;
  }
}

// ------------------------------------------------------------------------------------ tallies

/** Model calls, by count, tokens and money. */
export interface ModelTally {
  calls: number;
  failed: number;
  inputTokens: number;
  outputTokens: number;
  /** Millionths of a US dollar. */
  microUsd: number;
}

/** One tool's calls and how they ended. */
export interface ToolTally {
  /** Calls the kernel allowed and started. */
  started: number;
  ok: number;
  /** Failed calls by error code. */
  errors: Record<string, number>;
  denied: number;
  held: number;
}

/** Counts of what happened, shared by trace audits and summaries. */
export interface Tally {
  events: number;
  messages: { send: number; request: number };
  replies: { ok: number; error: number };
  /** Denials by error code. */
  denials: Record<string, number>;
  holds: { requested: number; approved: number; refused: number; expired: number; pending: number };
  models: ModelTally & { byModel: Record<string, ModelTally> };
  tools: Record<string, ToolTally>;
  memory: { ops: number; failed: number };
}

export function emptyTally(): Tally {
  return {
    events: 0,
    messages: { send: 0, request: 0 },
    replies: { ok: 0, error: 0 },
    denials: {},
    holds: { requested: 0, approved: 0, refused: 0, expired: 0, pending: 0 },
    models: { calls: 0, failed: 0, inputTokens: 0, outputTokens: 0, microUsd: 0, byModel: {} },
    tools: {},
    memory: { ops: 0, failed: 0 },
  };
}

const emptyModel = (): ModelTally => ({ calls: 0, failed: 0, inputTokens: 0, outputTokens: 0, microUsd: 0 });
const emptyTool = (): ToolTally => ({ started: 0, ok: 0, errors: {}, denied: 0, held: 0 });

function tool(t: Tally, name: string): ToolTally {
  return (t.tools[name] ??= emptyTool());
}

/** Adds one event to a tally. `holdOf` finds the hold an `approval.decided` event decides. */
export function tallyEvent(t: Tally, e: LogEvent, holdOf: (id: EventId) => ApprovalRequestedEvent | undefined): void {
  t.events += 1;
  switch (e.type) {
    case EventType.Message:
      t.messages[e.kind] += 1;
      break;
    case EventType.Reply:
      if (e.error) t.replies.error += 1;
      else t.replies.ok += 1;
      break;
    case EventType.Denied:
      t.denials[e.error.code] = (t.denials[e.error.code] ?? 0) + 1;
      if (e.op === "tool") tool(t, e.to ?? "?").denied += 1;
      break;
    case EventType.ApprovalRequested:
      t.holds.requested += 1;
      t.holds.pending += 1;
      if (e.op === "tool") tool(t, e.request.to ?? "?").held += 1;
      break;
    case EventType.ApprovalDecided: {
      if (!holdOf(e.approval)) break;
      t.holds.pending = Math.max(0, t.holds.pending - 1);
      if (e.verdict === "approve") t.holds.approved += 1;
      else if (e.by === "kernel") t.holds.expired += 1;
      else t.holds.refused += 1;
      break;
    }
    case EventType.EffectStarted:
      if (e.kind === "tool") tool(t, e.target).started += 1;
      break;
    case EventType.EffectCompleted: {
      if (e.kind === "llm") {
        const model = (t.models.byModel[e.usage?.model ?? e.target] ??= emptyModel());
        for (const m of [t.models, model]) {
          m.calls += 1;
          if (e.error) m.failed += 1;
          m.inputTokens += e.usage?.inputTokens ?? 0;
          m.outputTokens += e.usage?.outputTokens ?? 0;
          m.microUsd += e.spent?.microUsd ?? 0;
        }
      } else if (e.kind === "tool") {
        const row = tool(t, e.target);
        if (e.error) row.errors[e.error.code] = (row.errors[e.error.code] ?? 0) + 1;
        else row.ok += 1;
      } else {
        t.memory.ops += 1;
        if (e.error) t.memory.failed += 1;
      }
      break;
    }
    default:
      break;
  }
}

// ------------------------------------------------------------------------------------ trace tree

/** Why a node sits under its parent. */
export type TraceLink =
  /** Work injected from outside (a principal's send): hangs under the principal. */
  | "root"
  /** Sent or done while handling the parent delivery (`causation`). */
  | "causation"
  /** The answer to the parent request (`inReplyTo`). */
  | "reply"
  /** The outcome of the parent effect (`effect`). */
  | "outcome"
  /** A human's (or the clock's) decision on the parent hold (`approval`). */
  | "decision"
  /** The held action itself, carried out after the parent decision approved it. */
  | "released";

export interface TraceNode {
  event: LogEvent;
  link: TraceLink;
  /** Sequence of the first checkpoint whose `upTo` covers this event; absent while unsigned. */
  checkpoint?: number;
  children: TraceNode[];
}

/** The audit of one trace: who asked, the causal tree, what it cost, what signs it. */
export interface TraceAudit {
  trace: string;
  /** Who asked: the principal the work runs for. */
  principal: string | undefined;
  start: number;
  end: number;
  /** Number of events in the tree (every event of the trace and the decisions on its holds). */
  events: number;
  /** Agents that acted or were addressed, in order of first appearance. */
  agents: string[];
  /** Policy sets that made the trace's decisions. */
  policySets: string[];
  tally: Tally;
  roots: TraceNode[];
  /** The checkpoints covering the trace's events, with whether each verifies. */
  checkpoints: CheckpointStatus[];
  /** Sequences of the trace's events no checkpoint covers yet. */
  unsigned: number[];
  kernelKey?: string;
  /** Entries that could not be decoded while reading (run `maxwell verify`). */
  undecodable: number[];
}

function decisionOf(e: LogEvent): Decision | undefined {
  return "decision" in e ? e.decision : undefined;
}

/**
 * Builds the causal tree of `evidence.trace` from its events. Events of other traces in
 * `evidence.events` are left out, and so are decisions on holds of other traces.
 */
export function auditTrace(evidence: TraceEvidence): TraceAudit {
  const trace = evidence.trace;
  const nodes = new Map<EventId, TraceNode>();
  const holds = new Map<EventId, ApprovalRequestedEvent>();
  /** Holds by (actor, syscall id): a released action repeats the held syscall id. */
  const heldSyscalls = new Map<string, EventId>();
  const decisions = new Map<EventId, TraceNode>();
  const roots: TraceNode[] = [];
  const tally = emptyTally();
  const agents: string[] = [];
  const policySets: string[] = [];
  let principal: string | undefined;
  const meet = (name: string | undefined): void => {
    if (name !== undefined && name !== principal && name !== "kernel" && !agents.includes(name)) agents.push(name);
  };
  const sorted = [...evidence.events].sort((a, b) => a.seq - b.seq);
  const kept: LogEvent[] = [];
  for (const e of sorted) {
    const own = traceOf(e) === trace;
    const decided = e.type === EventType.ApprovalDecided && holds.has(e.approval);
    if (!own && !decided) continue;
    kept.push(e);
    if (e.type === EventType.ApprovalRequested) {
      holds.set(e.id, e);
      heldSyscalls.set(`${e.actor}\u0000${e.syscall}`, e.id);
    }
    const node: TraceNode = { event: e, link: "root", children: [] };
    let parent: TraceNode | undefined;
    if (e.type === EventType.ApprovalDecided) {
      parent = nodes.get(e.approval);
      node.link = "decision";
      decisions.set(e.approval, node);
    } else if (e.type === EventType.EffectCompleted) {
      parent = nodes.get(e.effect);
      node.link = "outcome";
    } else if (e.type === EventType.Reply) {
      parent = nodes.get(e.inReplyTo);
      node.link = "reply";
    } else if ("syscall" in e && e.type !== EventType.ApprovalRequested) {
      const hold = e.type === EventType.EffectStarted && e.approval !== undefined ? e.approval : heldSyscalls.get(`${e.actor}\u0000${e.syscall}`);
      if (hold !== undefined && nodes.has(hold)) {
        parent = decisions.get(hold) ?? nodes.get(hold);
        node.link = "released";
      }
    }
    if (!parent && "causation" in e && e.causation !== undefined) {
      parent = nodes.get(e.causation);
      if (parent) node.link = "causation";
    }
    if (!parent) node.link = "root";
    (parent ? parent.children : roots).push(node);
    nodes.set(e.id, node);

    if (principal === undefined && "principal" in e) principal = e.principal;
    if ("actor" in e) meet(e.actor);
    if ("to" in e) meet(e.to);
    const decision = decisionOf(e);
    if (decision && !policySets.includes(decision.policySet)) policySets.push(decision.policySet);
    tallyEvent(tally, e, (id) => holds.get(id));
  }
  if (kept.length === 0) throw new MaxwellError(ErrorCode.NotFound, `no event of trace ${trace} is in the log`);

  // Each event is covered by the first checkpoint after it whose upTo reaches it.
  const checkpoints = [...evidence.checkpoints].sort((a, b) => a.seq - b.seq);
  const covering: CheckpointStatus[] = [];
  const unsigned: number[] = [];
  for (const e of kept) {
    const c = checkpoints.find((cp) => cp.upTo >= e.seq);
    const node = nodes.get(e.id) as TraceNode;
    if (!c) {
      unsigned.push(e.seq);
      continue;
    }
    node.checkpoint = c.seq;
    if (!covering.includes(c)) covering.push(c);
  }

  const audit: TraceAudit = {
    trace,
    principal,
    start: (kept[0] as LogEvent).at,
    end: (kept.at(-1) as LogEvent).at,
    events: kept.length,
    agents,
    policySets,
    tally,
    roots,
    checkpoints: covering,
    unsigned,
    undecodable: evidence.undecodable,
  };
  if (evidence.kernelKey !== undefined) audit.kernelKey = evidence.kernelKey;
  return audit;
}

/** Every event in a tree, depth first (parents before children). */
export function* walk(nodes: readonly TraceNode[]): Generator<TraceNode> {
  for (const n of nodes) {
    yield n;
    yield* walk(n.children);
  }
}

// ------------------------------------------------------------------------------------ summaries

/** Whose activity a summary is about. */
export type SummarySubject = { kind: "principal"; name: string } | { kind: "agent"; name: string };

/** Where a summary starts: a log sequence, or a time (ms since the epoch). */
export type Since = { seq: number } | { at: number };

/** What a principal or an agent did (or had done for it) in the log. */
export interface ActivitySummary {
  subject: SummarySubject;
  since?: Since;
  /** Time of the first and last event counted. */
  first?: number;
  last?: number;
  tally: Tally;
  /** Traces touched, in order of first appearance. */
  traces: string[];
  /** For a principal: the agents that worked for it. For an agent: the principals it worked for. */
  counterparts: string[];
  /** For an agent: messages, requests and replies delivered to it. */
  received?: { send: number; request: number; reply: number };
  /** For a principal: held actions it decided as an approver. */
  decided?: { approved: number; refused: number };
}

/** Parses `--since`: a log sequence (digits) or an ISO time. */
export function parseSince(text: string): Since {
  if (/^\d+$/.test(text)) return { seq: Number(text) };
  const at = Date.parse(text);
  if (Number.isNaN(at)) throw new MaxwellError(ErrorCode.BadRequest, `--since must be a log sequence or an ISO time (e.g. 2025-01-31T12:00:00Z), not '${text}'`);
  return { at };
}

function after(e: LogEvent, since: Since | undefined): boolean {
  if (!since) return true;
  return "seq" in since ? e.seq >= since.seq : e.at >= since.at;
}

/**
 * A fold over the log that summarizes one principal's or one agent's activity. Feed every event
 * in order (also those before `since`: a decision after `since` may be on an earlier hold).
 */
export class ActivityFold {
  private readonly tally = emptyTally();
  private readonly holds = new Map<EventId, ApprovalRequestedEvent>();
  private readonly traces: string[] = [];
  private readonly counterparts: string[] = [];
  private readonly received = { send: 0, request: 0, reply: 0 };
  private readonly decided = { approved: 0, refused: 0 };
  private first: number | undefined;
  private last: number | undefined;

  constructor(
    private readonly subject: SummarySubject,
    private readonly since?: Since,
  ) {}

  add(e: LogEvent): void {
    const mine = this.subject.kind === "principal" ? "principal" in e && e.principal === this.subject.name : "actor" in e && e.actor === this.subject.name;
    if (mine && e.type === EventType.ApprovalRequested) this.holds.set(e.id, e);
    if (!after(e, this.since)) return;
    const name = this.subject.name;
    let counted = mine;
    if (e.type === EventType.ApprovalDecided && this.holds.has(e.approval)) counted = true;
    if (this.subject.kind === "principal" && e.type === EventType.ApprovalDecided && e.by === name) {
      this.decided[e.verdict === "approve" ? "approved" : "refused"] += 1;
      counted = true;
    }
    if (this.subject.kind === "agent" && (e.type === EventType.Message || e.type === EventType.Reply) && e.to === name) {
      this.received[e.type === EventType.Reply ? "reply" : e.kind] += 1;
      counted = true;
    }
    if (!counted) return;
    if (mine || e.type === EventType.ApprovalDecided) tallyEvent(this.tally, e, (id) => this.holds.get(id));
    else this.tally.events += 1;
    this.first ??= e.at;
    this.last = e.at;
    const trace = traceOf(e);
    if (trace !== undefined && !this.traces.includes(trace)) this.traces.push(trace);
    const other = this.subject.kind === "principal" ? ("actor" in e && e.actor !== name ? e.actor : undefined) : "principal" in e && e.principal !== name ? e.principal : undefined;
    if (other !== undefined && other !== "kernel" && !this.counterparts.includes(other)) this.counterparts.push(other);
  }

  result(): ActivitySummary {
    const s: ActivitySummary = { subject: this.subject, tally: this.tally, traces: this.traces, counterparts: this.counterparts };
    if (this.since) s.since = this.since;
    if (this.first !== undefined) s.first = this.first;
    if (this.last !== undefined) s.last = this.last;
    if (this.subject.kind === "agent") s.received = this.received;
    else s.decided = this.decided;
    return s;
  }
}

// ------------------------------------------------------------------------------------ text

/** Dollars from millionths of a dollar. */
export function dollars(microUsd: number): string {
  return `$${(microUsd / 1_000_000).toFixed(6)}`;
}

function clip(value: unknown, max = 70): string {
  let text: string | undefined;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) return "";
  text = text.replace(/\s+/g, " ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function verdict(d: Decision): string {
  return `${d.effect} [${d.policies.join(",") || "default deny"}] set ${d.policySet.slice(0, 12)}`;
}

function labelText(l: string[] | undefined): string {
  return l && l.length > 0 ? `  labels ${l.join(",")}` : "";
}

/** What one event in a trace says, in a line, without its sequence and time. */
export function describeEvent(e: LogEvent): string {
  switch (e.type) {
    case EventType.Message:
      return `${e.kind} ${e.actor} → ${e.to}  ${verdict(e.decision)}${labelText(e.labels)}  ${clip(e.body)}`;
    case EventType.Reply:
      return `reply ${e.actor} → ${e.to}  ${e.error ? `error ${e.error.code}: ${clip(e.error.message)}` : clip(e.body)}  ${verdict(e.decision)}`;
    case EventType.Denied:
      return `DENIED ${e.actor} ${e.op}${e.to ? ` → ${e.to}` : ""}  ${e.error.code}: ${clip(e.error.message, 100)}  ${verdict(e.decision)}`;
    case EventType.EffectStarted: {
      const what = e.kind === "llm" ? "model" : e.kind === "tool" ? "tool" : "memory";
      return `${what} ${e.actor} → ${e.target} ${e.op}  ${verdict(e.decision)}${labelText(e.labels)}${e.approval ? `  released by approval ${e.approval}` : ""}  ${clip(e.args)}`;
    }
    case EventType.EffectCompleted: {
      const usage = e.usage ? `  ${e.usage.inputTokens}+${e.usage.outputTokens} tokens (${e.usage.model})` : "";
      const money = e.spent?.microUsd !== undefined ? `  ${dollars(e.spent.microUsd)}` : "";
      const outcome = e.error ? `FAILED ${e.error.code}: ${clip(e.error.message)}` : `ok ${clip(e.result)}`;
      return `${e.kind === "llm" ? "answer" : "result"} ${e.target} → ${e.actor}  ${outcome}${usage}${money}${labelText(e.labels)}${e.redactions ? `  ${e.redactions} redacted` : ""}`;
    }
    case EventType.ApprovalRequested:
      return `HELD ${e.actor} ${e.op}${e.request.to ? ` → ${e.request.to}` : ""}: ${e.reason}  approval ${e.id}  ${verdict(e.decision)}${labelText(e.labels)}  expires ${new Date(e.expiresAt).toISOString()}`;
    case EventType.ApprovalDecided:
      if (e.verdict === "approve") return `APPROVED by ${e.by}${e.reason ? `: ${e.reason}` : ""}${e.endorse ? "  (endorsed)" : ""}`;
      return e.by === "kernel" ? `EXPIRED: nobody decided in time${e.reason ? ` (${e.reason})` : ""}` : `REFUSED by ${e.by}${e.reason ? `: ${e.reason}` : ""}`;
    case EventType.Record:
      return `record ${e.actor} observed ${e.observed.map((o) => `${o.kind}=${o.value}`).join(" ")}`;
    default:
      return e.type;
  }
}

const clock = (at: number): string => new Date(at).toISOString().slice(11, 23);
const offset = (at: number, start: number): string => `+${((at - start) / 1000).toFixed(3)}s`;

function toolLines(t: Tally): string[] {
  return Object.entries(t.tools)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, r]) => {
      const errors = Object.entries(r.errors).map(([code, n]) => `${n} ${code}`);
      const parts = [`${r.ok} ok`, ...errors, ...(r.held ? [`${r.held} held`] : []), ...(r.denied ? [`${r.denied} denied`] : [])];
      return `${name}: ${r.started} started (${parts.join(", ")})`;
    });
}

/** The counts of a tally as lines, for people. */
export function tallyLines(t: Tally): string[] {
  const lines: string[] = [];
  const denials = Object.entries(t.denials).map(([code, n]) => `${n} ${code}`);
  lines.push(
    `messages ${t.messages.send + t.messages.request} (${t.messages.send} send, ${t.messages.request} request), replies ${t.replies.ok + t.replies.error}${t.replies.error ? ` (${t.replies.error} failed)` : ""}, denials ${denials.length ? denials.join(", ") : "0"}`,
  );
  const h = t.holds;
  lines.push(`holds ${h.requested}${h.requested ? ` (${h.approved} approved, ${h.refused} refused, ${h.expired} expired, ${h.pending} pending)` : ""}`);
  const m = t.models;
  lines.push(`model calls ${m.calls}${m.failed ? ` (${m.failed} failed)` : ""}: ${m.inputTokens} in + ${m.outputTokens} out tokens, ${dollars(m.microUsd)}`);
  for (const [model, r] of Object.entries(m.byModel)) lines.push(`  ${model}: ${r.calls} calls, ${r.inputTokens}+${r.outputTokens} tokens, ${dollars(r.microUsd)}`);
  const tools = toolLines(t);
  lines.push(`tool calls ${Object.values(t.tools).reduce((n, r) => n + r.started, 0)}${tools.length ? ":" : ""}`);
  for (const l of tools) lines.push(`  ${l}`);
  if (t.memory.ops) lines.push(`memory operations ${t.memory.ops}${t.memory.failed ? ` (${t.memory.failed} failed)` : ""}`);
  return lines;
}

/** Sequences of the trace's events that checkpoint `c` is the first to cover. */
export function coveredBy(a: TraceAudit, c: CheckpointStatus): number[] {
  return [...walk(a.roots)]
    .filter((n) => n.checkpoint === c.seq)
    .map((n) => n.event.seq)
    .sort((x, y) => x - y);
}

/** The trace as an indented tree with a header and the checkpoints that sign it. */
export function formatTrace(a: TraceAudit): string {
  const out: string[] = [];
  out.push(`trace ${a.trace}`);
  out.push(
    `asked by ${a.principal ?? "?"} at ${new Date(a.start).toISOString()}; ${a.events} events over ${((a.end - a.start) / 1000).toFixed(3)} s; agents: ${a.agents.join(", ") || "none"}`,
  );
  out.push(`policy sets: ${a.policySets.map((p) => p.slice(0, 12)).join(", ") || "none"}`);
  out.push(...tallyLines(a.tally));
  out.push("");
  out.push(`${a.principal ?? "?"} (principal)`);
  const draw = (nodes: readonly TraceNode[], indent: string): void => {
    nodes.forEach((n, i) => {
      const last = i === nodes.length - 1;
      const e = n.event;
      const why = n.link === "released" ? "  (released)" : "";
      out.push(`${indent}${last ? "└─ " : "├─ "}#${e.seq} ${clock(e.at)} ${offset(e.at, a.start)}  ${describeEvent(e)}${why}`);
      draw(n.children, indent + (last ? "   " : "│  "));
    });
  };
  draw(a.roots, "");
  out.push("");
  out.push("checkpoints:");
  for (const c of a.checkpoints) {
    const seqs = coveredBy(a, c);
    out.push(`  #${c.seq} signs #1..#${c.upTo} (head ${c.head.slice(0, 12)}…), covering ${seqs.length} events of this trace (#${seqs[0]}..#${seqs.at(-1)}): ${checkpointStatement(c)}`);
  }
  if (a.unsigned.length > 0) out.push(`  ${a.unsigned.length} events (#${a.unsigned[0]}..#${a.unsigned.at(-1)}) are not yet covered by a signed checkpoint`);
  if (a.checkpoints.length === 0 && a.unsigned.length === 0) out.push("  none");
  if (a.undecodable.length > 0) out.push(`warning: ${a.undecodable.length} log entries could not be decoded (#${a.undecodable.slice(0, 5).join(", #")}); run 'maxwell verify'`);
  return out.join("\n") + "\n";
}

/** A summary for people. */
export function formatSummary(s: ActivitySummary): string {
  const out: string[] = [];
  const since = s.since ? ("seq" in s.since ? ` since #${s.since.seq}` : ` since ${new Date(s.since.at).toISOString()}`) : "";
  const span = s.first !== undefined && s.last !== undefined ? `, ${new Date(s.first).toISOString()} to ${new Date(s.last).toISOString()}` : "";
  out.push(`${s.subject.kind} ${s.subject.name}${since}: ${s.tally.events} events${span}`);
  out.push(`traces touched ${s.traces.length}${s.traces.length ? `: ${s.traces.slice(0, 10).map((t) => t.slice(0, 8)).join(", ")}${s.traces.length > 10 ? ", …" : ""}` : ""}`);
  out.push(`${s.subject.kind === "principal" ? "agents that worked for it" : "worked for"}: ${s.counterparts.join(", ") || "none"}`);
  if (s.received) out.push(`received ${s.received.send} messages, ${s.received.request} requests, ${s.received.reply} replies`);
  out.push(...tallyLines(s.tally));
  if (s.decided && s.decided.approved + s.decided.refused > 0) out.push(`decided as approver: ${s.decided.approved} approved, ${s.decided.refused} refused`);
  return out.join("\n") + "\n";
}

// ------------------------------------------------------------------------------------ HTML

/** Escapes text for HTML content and attribute values (event bodies are untrusted). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string);
}

const KIND_CLASS: Partial<Record<LogEvent["type"], string>> = {
  [EventType.Message]: "msg",
  [EventType.Reply]: "reply",
  [EventType.Denied]: "deny",
  [EventType.EffectStarted]: "effect",
  [EventType.EffectCompleted]: "outcome",
  [EventType.ApprovalRequested]: "hold",
  [EventType.ApprovalDecided]: "human",
  [EventType.Record]: "record",
};

function badge(e: LogEvent): string {
  switch (e.type) {
    case EventType.Message:
      return e.kind;
    case EventType.Reply:
      return e.error ? "reply (error)" : "reply";
    case EventType.Denied:
      return "denied";
    case EventType.EffectStarted:
      return e.kind === "llm" ? "model call" : e.kind === "tool" ? "tool call" : "memory";
    case EventType.EffectCompleted:
      return e.error ? "failed" : e.kind === "llm" ? "answer" : "result";
    case EventType.ApprovalRequested:
      return "held";
    case EventType.ApprovalDecided:
      return e.verdict === "approve" ? "approved" : e.by === "kernel" ? "expired" : "refused";
    default:
      return e.type;
  }
}

/** Safe JSON for display: bins and cycles cannot break the report. */
function prettyJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v), 2);
  } catch {
    return String(value);
  }
}

function nodeHtml(n: TraceNode, a: TraceAudit, checkpoints: Map<number, CheckpointStatus>): string {
  const e = n.event;
  const cls = KIND_CLASS[e.type] ?? "other";
  const failed = (e.type === EventType.Reply && e.error) || (e.type === EventType.EffectCompleted && e.error) || (e.type === EventType.ApprovalDecided && e.verdict === "deny");
  const cp = n.checkpoint !== undefined ? checkpoints.get(n.checkpoint) : undefined;
  const seal = cp
    ? `<span class="seal ${cp.verified ? "ok" : "bad"}" title="${escapeHtml(checkpointStatement(cp))}">${cp.verified ? "✓" : "✗"} checkpoint #${cp.seq}</span>`
    : `<span class="seal none" title="no signed checkpoint covers this event yet">unsigned</span>`;
  const parts = [
    `<span class="seq">#${e.seq}</span>`,
    `<span class="time" title="${escapeHtml(new Date(e.at).toISOString())}">${clock(e.at)} <small>${offset(e.at, a.start)}</small></span>`,
    `<span class="badge ${cls}${failed ? " failed" : ""}">${escapeHtml(badge(e))}</span>`,
    `<span class="what">${escapeHtml(describeEvent(e))}</span>`,
    n.link === "released" ? `<span class="link">released by the decision above</span>` : "",
    seal,
  ];
  const children = n.children.length ? `<ul>${n.children.map((c) => nodeHtml(c, a, checkpoints)).join("")}</ul>` : "";
  return `<li id="ev-${escapeHtml(e.id)}" class="${cls}"><div class="card">${parts.join(" ")}<details><summary>event ${escapeHtml(e.id)}</summary><pre>${escapeHtml(prettyJson(e))}</pre></details></div>${children}</li>`;
}

interface Arrow {
  event: LogEvent;
  from: string;
  to: string;
  color: string;
  dashed: boolean;
  label: string;
}

/** Lanes for what is not an agent: models, tools and memory namespaces, and approvers. */
const HUMAN = "\u0000human:";
function resourceLane(kind: string, target: string): string {
  return `\u0000${kind === "llm" ? "model" : kind === "mem" ? "memory" : "tool"}:${target}`;
}

function laneTitle(lane: string, principal: string | undefined): string {
  if (lane.startsWith(HUMAN)) {
    const who = lane.slice(HUMAN.length);
    return who === "kernel" ? "kernel (expiry)" : `${who} (approver)`;
  }
  if (lane.startsWith("\u0000")) return lane.slice(1).replace(":", " ");
  return lane === principal ? `${lane} (principal)` : lane;
}

function arrowOf(e: LogEvent, holds: Map<string, ApprovalRequestedEvent>): Arrow | undefined {
  const a = (from: string, to: string, color: string, dashed: boolean, label: string): Arrow => ({ event: e, from, to, color, dashed, label });
  switch (e.type) {
    case EventType.Message:
      return a(e.actor, e.to, e.kind === "request" ? "#4338ca" : "#2563eb", false, `${e.kind} ${clip(e.body, 28)}`);
    case EventType.Reply:
      return a(e.actor, e.to, e.error ? "#dc2626" : "#059669", true, e.error ? `reply ${e.error.code}` : `reply ${clip(e.body, 28)}`);
    case EventType.Denied:
      return a(e.actor, e.to ?? e.actor, "#dc2626", false, `DENIED ${e.op}: ${e.error.code}`);
    case EventType.EffectStarted:
      return a(e.actor, resourceLane(e.kind, e.target), e.kind === "llm" ? "#7c3aed" : e.kind === "tool" ? "#0d9488" : "#64748b", false, `${e.op}${e.approval ? " (approved)" : ""}`);
    case EventType.EffectCompleted: {
      const usage = e.usage ? ` ${e.usage.inputTokens}+${e.usage.outputTokens} tok` : "";
      return a(resourceLane(e.kind, e.target), e.actor, e.error ? "#dc2626" : e.kind === "llm" ? "#7c3aed" : "#0d9488", true, e.error ? `failed ${e.error.code}` : `ok${usage}`);
    }
    case EventType.ApprovalRequested: {
      const to = e.request.to;
      const target = to === undefined ? e.actor : e.op === "llm" || e.op === "tool" || e.op === "mem" ? resourceLane(e.op, to) : to;
      return a(e.actor, target, "#d97706", false, `HELD: ${clip(e.reason, 30)}`);
    }
    case EventType.ApprovalDecided: {
      const hold = holds.get(e.approval);
      return a(`${HUMAN}${e.by}`, hold?.actor ?? e.by, e.verdict === "approve" ? "#059669" : "#dc2626", false, e.verdict === "approve" ? "approved" : e.by === "kernel" ? "expired" : "refused");
    }
    case EventType.Record:
      return a(e.actor, e.actor, "#64748b", false, "record");
    default:
      return undefined;
  }
}

/** A sequence diagram: one lane per participant, one row per event, arrows for who acted on whom. */
function sequenceSvg(a: TraceAudit): string {
  const events = [...walk(a.roots)].map((n) => n.event).sort((x, y) => x.seq - y.seq);
  const holds = new Map<string, ApprovalRequestedEvent>();
  for (const e of events) if (e.type === EventType.ApprovalRequested) holds.set(e.id, e);
  const arrows = events.map((e) => arrowOf(e, holds)).filter((x): x is Arrow => x !== undefined);
  const lanes: string[] = [];
  const lane = (name: string): number => {
    let i = lanes.indexOf(name);
    if (i < 0) i = lanes.push(name) - 1;
    return i;
  };
  if (a.principal !== undefined) lane(a.principal);
  for (const name of a.agents) lane(name);
  for (const r of arrows) {
    lane(r.from);
    lane(r.to);
  }
  const W = 150;
  const left = 70;
  const top = 50;
  const rowH = 30;
  const width = left + lanes.length * W + 20;
  const height = top + arrows.length * rowH + 30;
  const x = (name: string): number => left + lane(name) * W + W / 2;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="sequence of events in trace ${escapeHtml(a.trace)}">`);
  lanes.forEach((name, i) => {
    const cx = left + i * W + W / 2;
    out.push(`<line x1="${cx}" y1="${top - 12}" x2="${cx}" y2="${height - 10}" stroke="#cbd5e1" stroke-width="1.5"/>`);
    out.push(`<rect x="${cx - W / 2 + 8}" y="8" width="${W - 16}" height="28" rx="6" fill="${name === a.principal || name.startsWith(HUMAN) ? "#fef3c7" : name.startsWith("\u0000") ? "#ede9fe" : "#f1f5f9"}" stroke="#94a3b8"/>`);
    out.push(`<text x="${cx}" y="27" text-anchor="middle" font-size="12" font-weight="600">${escapeHtml(clip(laneTitle(name, a.principal), 22))}</text>`);
  });
  arrows.forEach((r, i) => {
    const y = top + i * rowH + rowH / 2;
    const x1 = x(r.from);
    const x2 = x(r.to);
    const tip = `#${r.event.seq} ${new Date(r.event.at).toISOString()} ${describeEvent(r.event)}`;
    out.push(`<a href="#ev-${escapeHtml(r.event.id)}"><g><title>${escapeHtml(tip)}</title>`);
    out.push(`<text x="6" y="${y + 4}" font-size="11" fill="#64748b">#${r.event.seq}</text>`);
    if (x1 === x2) {
      out.push(`<circle cx="${x1}" cy="${y}" r="5" fill="${r.color}"/>`);
      out.push(`<text x="${x1 + 9}" y="${y - 4}" font-size="11" fill="${r.color}">${escapeHtml(r.label)}</text>`);
    } else {
      const dir = x2 > x1 ? 1 : -1;
      out.push(`<line x1="${x1}" y1="${y}" x2="${x2 - dir * 7}" y2="${y}" stroke="${r.color}" stroke-width="2"${r.dashed ? ' stroke-dasharray="5 4"' : ""}/>`);
      out.push(`<polygon points="${x2},${y} ${x2 - dir * 9},${y - 5} ${x2 - dir * 9},${y + 5}" fill="${r.color}"/>`);
      if (r.event.type === EventType.Denied) out.push(`<text x="${x2 - dir * 2}" y="${y + 4}" font-size="14" font-weight="700" text-anchor="middle" fill="#dc2626">✕</text>`);
      out.push(`<text x="${Math.min(x1, x2) + 8}" y="${y - 5}" font-size="11" fill="${r.color}">${escapeHtml(r.label)}</text>`);
    }
    out.push(`</g></a>`);
  });
  out.push(`</svg>`);
  return out.join("\n");
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#0f172a;margin:24px;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
code,pre,.seq,.time{font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.meta{color:#475569} .cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.stat{border:1px solid #e2e8f0;border-radius:8px;padding:8px 12px;min-width:120px;background:#f8fafc}
.stat b{display:block;font-size:18px} .stat span{color:#64748b;font-size:12px}
.diagram{overflow-x:auto;border:1px solid #e2e8f0;border-radius:8px;padding:8px}
.tree,.tree ul{list-style:none;margin:0;padding-left:22px;position:relative}
.tree{padding-left:0} .tree li{position:relative;padding:5px 0 5px 18px}
.tree ul>li::before{content:"";position:absolute;left:0;top:0;bottom:0;border-left:2px solid #cbd5e1}
.tree ul>li:last-child::before{bottom:auto;height:20px}
.tree ul>li::after{content:"";position:absolute;left:0;top:20px;width:14px;border-top:2px solid #cbd5e1}
.card{display:inline-block;border:1px solid #e2e8f0;border-left:4px solid #94a3b8;border-radius:6px;padding:4px 8px;background:#fff;max-width:100%}
.principal>.card{border-left-color:#f59e0b;background:#fffbeb;font-weight:600}
.msg>.card{border-left-color:#2563eb} .reply>.card{border-left-color:#059669} .deny>.card{border-left-color:#dc2626;background:#fef2f2}
.effect>.card{border-left-color:#7c3aed} .outcome>.card{border-left-color:#0d9488} .hold>.card{border-left-color:#d97706;background:#fffbeb}
.human>.card{border-left-color:#0891b2;background:#ecfeff}
.seq{color:#64748b} .time{color:#334155;font-size:12px} .time small{color:#94a3b8}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;background:#64748b}
.badge.msg{background:#2563eb} .badge.reply{background:#059669} .badge.deny,.badge.failed{background:#dc2626}
.badge.effect{background:#7c3aed} .badge.outcome{background:#0d9488} .badge.hold{background:#d97706} .badge.human{background:#0891b2}
.what{word-break:break-word} .link{color:#0891b2;font-size:12px}
.seal{font-size:12px;border-radius:4px;padding:0 5px} .seal.ok{color:#166534;background:#dcfce7} .seal.bad{color:#991b1b;background:#fee2e2} .seal.none{color:#92400e;background:#fef3c7}
details summary{cursor:pointer;color:#64748b;font-size:12px} pre{background:#f8fafc;border:1px solid #e2e8f0;padding:8px;overflow-x:auto;font-size:12px;max-width:900px}
table{border-collapse:collapse} td,th{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;font-size:13px}
.ok{color:#166534} .bad{color:#991b1b}
`;

/** A self-contained HTML report of a trace: inline CSS and SVG, no scripts, no external assets. */
export function renderTraceHtml(a: TraceAudit, generatedAt: number): string {
  const t = a.tally;
  const checkpoints = new Map(a.checkpoints.map((c) => [c.seq, c]));
  const stat = (value: string | number, what: string): string => `<div class="stat"><b>${escapeHtml(String(value))}</b><span>${escapeHtml(what)}</span></div>`;
  const toolCalls = Object.values(t.tools).reduce((n, r) => n + r.started, 0);
  const cards = [
    stat(a.events, "events"),
    stat(a.agents.length, "agents"),
    stat(t.messages.send + t.messages.request, "messages and requests"),
    stat(Object.values(t.denials).reduce((n, x) => n + x, 0), "denials"),
    stat(t.holds.requested, "holds for a human"),
    stat(t.models.calls, "model calls"),
    stat(t.models.inputTokens + t.models.outputTokens, "tokens"),
    stat(dollars(t.models.microUsd), "spent on models"),
    stat(toolCalls, "tool calls"),
  ].join("");
  const rows = a.checkpoints
    .map((c) => {
      const covered = coveredBy(a, c);
      return `<tr><td>#${c.seq}</td><td>${escapeHtml(new Date(c.at).toISOString())}</td><td>#1..#${c.upTo}</td><td>${covered.length} (#${covered[0]}..#${covered.at(-1)})</td><td><code>${escapeHtml(c.head.slice(0, 16))}…</code></td><td class="${c.verified ? "ok" : "bad"}">${escapeHtml(checkpointStatement(c))}</td></tr>`;
    })
    .join("");
  const unsigned = a.unsigned.length ? `<p class="bad">${a.unsigned.length} events of this trace (#${a.unsigned[0]}..#${a.unsigned.at(-1)}) are not yet covered by a signed checkpoint.</p>` : "";
  const tools = toolLines(t).map((l) => `<li>${escapeHtml(l)}</li>`).join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Maxwell audit: trace ${escapeHtml(a.trace)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Trace <code>${escapeHtml(a.trace)}</code></h1>
<p class="meta">Asked by <b>${escapeHtml(a.principal ?? "?")}</b> (principal) at ${escapeHtml(new Date(a.start).toISOString())}; last event ${escapeHtml(new Date(a.end).toISOString())} (${((a.end - a.start) / 1000).toFixed(3)} s).
Agents: ${escapeHtml(a.agents.join(", ") || "none")}. Policy sets: ${a.policySets.map((p) => `<code>${escapeHtml(p.slice(0, 16))}</code>`).join(", ") || "none"}.</p>
<div class="cards">${cards}</div>
${tools ? `<ul>${tools}</ul>` : ""}
<h2>Who acted on whom</h2>
<div class="diagram">${sequenceSvg(a)}</div>
<h2>Causal tree</h2>
<ul class="tree"><li class="principal"><div class="card">${escapeHtml(a.principal ?? "?")} (principal)</div><ul>${a.roots.map((n) => nodeHtml(n, a, checkpoints)).join("")}</ul></li></ul>
<h2>Signed checkpoints</h2>
${rows ? `<table><tr><th>checkpoint</th><th>written</th><th>signs</th><th>events of this trace</th><th>head</th><th>verification</th></tr>${rows}</table>` : "<p>No checkpoint covers this trace yet.</p>"}
${unsigned}
<p class="meta">Kernel key from genesis: <code>${escapeHtml(a.kernelKey ?? "unknown")}</code>. Report generated by <code>maxwell audit trace</code> at ${escapeHtml(new Date(generatedAt).toISOString())}; check the whole chain with <code>maxwell verify</code>.</p>
</body>
</html>
`;
}
