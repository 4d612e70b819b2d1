/**
 * Agent re-execution: runs an agent's handler code against the log instead of the world. Every
 * delivered message, every syscall answer (model output, tool result, memory read, reply,
 * denial, a held call and what a human decided) and every clock or random read is served from
 * what the log recorded; nothing is called or sent. Each syscall the code issues is numbered
 * exactly as the live runner numbers it (`syscallId(delivery, step)`) and compared with what the
 * log recorded for that id: the first difference is the report.
 *
 * Replay intercepts only what goes through the context: `ctx.now()` and `ctx.random()` are
 * served from the log, `Date.now()` and `Math.random()` are not, so code that reads them directly
 * is caught only when what it then issues differs from the log.
 *
 * @example
 * ```ts
 * import { replayAgent, formatReplayReport } from "maxwell/sdk/replay";
 *
 * const report = await replayAgent(worker, events, { name: "worker-1" });
 * console.log(formatReplayReport(report)); // identical: 12 syscalls matched over 4 deliveries
 * ```
 */
import {
  ErrorCode,
  EventType,
  MaxwellError,
  SyscallOp,
  decode,
  encode,
  syscallId,
  type ApprovalDecidedEvent,
  type EffectCompletedEvent,
  type EventId,
  type LogEvent,
  type MessageEvent,
  type Observation,
  type ReplyEvent,
  type SyscallId,
  type SyscallRequest,
  type TraceId,
  type WireError,
} from "../protocol/mod.js";
import { createLogger, type Logger } from "../runtime/logger.js";
import { messageOf, type AgentContext, type AgentDefinition, type EffectResult, type LlmResponse, type Message, type RequestOptions, type SendOptions, type SendResult } from "./agent.js";

export interface ReplayOptions {
  /** The agent whose deliveries and syscalls are replayed (its actor name in the log). */
  name: string;
  /** Only deliveries of this trace (a prefix is enough). Runs of `onStart` are then skipped. */
  trace?: string;
  /** Only deliveries (and `onStart` runs) whose log sequence is at least this. */
  from?: number;
  /** Only deliveries (and `onStart` runs) whose log sequence is at most this. */
  to?: number;
  /** What `ctx.log` writes to (default: nothing). */
  log?: Logger;
  /** How long one handler may run without finishing before replay gives up on it (default 30 s). */
  handlerTimeoutMs?: number;
}

/** One syscall in comparable form: what the code issued, or what the log recorded. */
export interface SyscallView {
  /** Syscall op: send, request, reply, record, llm, tool, mem. */
  op: string;
  /** Target agent, model, tool or memory namespace (for a reply: the requester). */
  target?: string;
  /** Message or reply body; model parameters (with `model`); tool arguments; `{ op, ...args }` for memory. */
  body?: unknown;
  /** A reply that reports a failure instead of a body. */
  error?: { code: string; message: string };
  /** A request's timeout. */
  timeoutMs?: number;
  /** Clock and random reads made since the previous syscall, which ride on this one. */
  observed?: Array<Observation["kind"]>;
}

/** A recorded syscall: its view, and the event that records it. */
export interface RecordedSyscall extends SyscallView {
  event: EventId;
  seq: number;
  type: LogEvent["type"];
  /** False when the log does not keep the body (a denied syscall records only op and target). */
  bodyRecorded: boolean;
}

/** One replayed handler run: a delivered message, or an `onStart` run. */
export interface ReplayedRun {
  /** The delivery's event id, or the `onStart` run's scope. */
  id: string;
  seq: number;
  kind: "send" | "request" | "start";
  from?: string;
  trace?: TraceId;
}

export type DivergenceKind =
  /** The code issued a different syscall than the log recorded under the same id. */
  | "mismatch"
  /** The log recorded a syscall the code did not issue. */
  | "missing"
  /** The code issued a syscall beyond what the log recorded. */
  | "extra"
  /** The code read ctx.now()/ctx.random() where the log recorded no such read. */
  | "observation";

/** The first place the code did something other than what the log recorded. */
export interface Divergence {
  kind: DivergenceKind;
  run: ReplayedRun;
  syscall: SyscallId;
  recorded?: RecordedSyscall;
  issued?: SyscallView;
  /** One line saying what differs. */
  summary: string;
  /** Line diff of the recorded and issued syscall as pretty JSON (`-` recorded, `+` issued). */
  diff: string;
}

/** A run the log ends in the middle of: the code matched up to there. */
export interface IncompleteRun {
  run: ReplayedRun;
  syscall?: SyscallId;
  reason: string;
}

export interface ReplayReport {
  agent: string;
  identical: boolean;
  /** Deliveries replayed (not counting `onStart` runs). */
  deliveries: number;
  /** `onStart` runs replayed. */
  starts: number;
  /** Syscalls the code issued that matched the log. */
  syscalls: number;
  incomplete: IncompleteRun[];
  divergence?: Divergence;
}

const DEFAULT_HANDLER_TIMEOUT_MS = 30_000;

/**
 * Replays `def` against `events` (the log, or the part of it from the first delivery on, in
 * order) as the agent `opts.name`, and reports the first divergence or that every syscall matched.
 */
export async function replayAgent(def: AgentDefinition, events: Iterable<LogEvent>, opts: ReplayOptions): Promise<ReplayReport> {
  const index = new ReplayLog(opts.name, events);
  const log = opts.log ?? createLogger(`replay:${opts.name}`, "silent");
  const report: ReplayReport = { agent: opts.name, identical: true, deliveries: 0, starts: 0, syscalls: 0, incomplete: [] };
  for (const run of index.runs(opts)) {
    const outcome = await replayRun(def, index, run, log, opts.handlerTimeoutMs ?? DEFAULT_HANDLER_TIMEOUT_MS);
    if (run.kind === "start") report.starts += 1;
    else report.deliveries += 1;
    report.syscalls += outcome.matched;
    if (outcome.incomplete) report.incomplete.push(outcome.incomplete);
    if (outcome.divergence) {
      report.identical = false;
      report.divergence = outcome.divergence;
      break;
    }
  }
  return report;
}

// ------------------------------------------------------------------ the log, indexed for replay

/** How the log answered one syscall. */
type Answer =
  | { kind: "value"; value: AnswerValue; seq: number }
  | { kind: "error"; error: WireError; seq: number }
  | { kind: "pending"; reason: string };

/** What a syscall's answer carries, before the context shapes it for its method. */
interface AnswerValue {
  event?: EventId;
  seq?: number;
  body?: unknown;
  effect?: { result?: unknown; labels: string[]; usage?: EffectCompletedEvent["usage"] };
}

interface StepRecord {
  view: RecordedSyscall;
  observed: Observation[];
  answer: Answer;
}

/** Events that record a syscall itself (an effect's outcome is found through its start). */
type Primary = Exclude<Extract<LogEvent, { syscall: SyscallId }>, EffectCompletedEvent>;

const PRIMARY: ReadonlySet<string> = new Set([
  EventType.Message,
  EventType.Reply,
  EventType.Denied,
  EventType.Record,
  EventType.EffectStarted,
  EventType.ApprovalRequested,
]);

/** The scope and step of a syscall id (`<scope>:<step>`). */
function splitSyscall(id: string): { scope: string; step: number } | undefined {
  const colon = id.lastIndexOf(":");
  if (colon <= 0) return undefined;
  const step = Number(id.slice(colon + 1));
  return Number.isInteger(step) && step >= 0 ? { scope: id.slice(0, colon), step } : undefined;
}

/** The log as replay reads it: the agent's deliveries, its syscalls by (scope, step), their answers. */
class ReplayLog {
  private readonly deliveries: MessageEvent[] = [];
  private readonly byId = new Map<string, MessageEvent>();
  private readonly raw = new Map<string, Map<number, Primary[]>>();
  /** Scopes of syscalls made outside any delivery (`onStart`), with their first sequence. */
  private readonly startScopes = new Map<string, number>();
  private readonly replies = new Map<EventId, ReplyEvent>();
  /** Requests that got an answer (from the agent, or the kernel's timeout). */
  private readonly answered = new Set<EventId>();
  private readonly completions = new Map<EventId, EffectCompletedEvent>();
  private readonly decisions = new Map<EventId, ApprovalDecidedEvent>();
  private readonly resolved = new Map<string, Map<number, StepRecord>>();
  /** Syscalls of this agent the kernel refused as malformed: recorded without their syscall id. */
  rejections = 0;

  constructor(
    readonly name: string,
    events: Iterable<LogEvent>,
  ) {
    for (const e of events) this.add(e);
  }

  private add(e: LogEvent): void {
    switch (e.type) {
      case EventType.Message:
        if (e.to === this.name) {
          this.deliveries.push(e);
          this.byId.set(e.id, e);
        }
        break;
      case EventType.Reply:
        if (e.to === this.name && !this.replies.has(e.inReplyTo)) this.replies.set(e.inReplyTo, e);
        this.answered.add(e.inReplyTo);
        break;
      case EventType.EffectCompleted:
        if (e.actor === this.name && !this.completions.has(e.effect)) this.completions.set(e.effect, e);
        return;
      case EventType.ApprovalDecided:
        if (!this.decisions.has(e.approval)) this.decisions.set(e.approval, e);
        return;
      case EventType.Rejected:
        if (e.actor === this.name) this.rejections += 1;
        return;
      default:
        break;
    }
    if (!PRIMARY.has(e.type)) return;
    const p = e as Primary;
    if (p.actor !== this.name) return;
    const id = splitSyscall(p.syscall);
    if (!id) return;
    let steps = this.raw.get(id.scope);
    if (!steps) this.raw.set(id.scope, (steps = new Map()));
    const list = steps.get(id.step);
    if (list) list.push(p);
    else steps.set(id.step, [p]);
    if (p.causation === undefined && !this.startScopes.has(id.scope)) this.startScopes.set(id.scope, p.seq);
  }

  /** The handler runs to replay, in log order. */
  runs(opts: ReplayOptions): ReplayedRun[] {
    const inRange = (seq: number): boolean => (opts.from === undefined || seq >= opts.from) && (opts.to === undefined || seq <= opts.to);
    const runs: ReplayedRun[] = [];
    for (const d of this.deliveries) {
      if (!inRange(d.seq)) continue;
      if (opts.trace !== undefined && !d.trace.startsWith(opts.trace)) continue;
      runs.push({ id: d.id, seq: d.seq, kind: d.kind, from: d.actor, trace: d.trace });
    }
    if (opts.trace === undefined) {
      // A run is replayed whole or not at all: one whose first syscall is outside the events read is left out.
      for (const [scope, seq] of this.startScopes) if (inRange(seq) && this.raw.get(scope)?.has(0)) runs.push({ id: scope, seq, kind: "start" });
    }
    return runs.sort((a, b) => a.seq - b.seq);
  }

  delivery(id: string): MessageEvent | undefined {
    return this.byId.get(id);
  }

  /** A request the agent had not begun to handle where the log ends: no syscall of it, no answer. */
  untouched(id: string): boolean {
    const d = this.byId.get(id);
    return d?.kind === "request" && !this.raw.has(id) && !this.answered.has(d.id);
  }

  /** What the log recorded for each step of `scope`. */
  steps(scope: string): Map<number, StepRecord> {
    let steps = this.resolved.get(scope);
    if (steps) return steps;
    steps = new Map();
    for (const [step, events] of this.raw.get(scope) ?? []) steps.set(step, this.resolve(events));
    this.resolved.set(scope, steps);
    return steps;
  }

  /**
   * The outcome of one syscall id from every event recorded under it. A refusal for now (the
   * agent was paused: `unavailable`) is superseded by whatever the retried syscall got; a held
   * call is answered by what followed the human's decision.
   */
  private resolve(events: Primary[]): StepRecord {
    const live = events.filter((e, i) => !(e.type === EventType.Denied && e.error.code === ErrorCode.Unavailable && i < events.length - 1));
    const held = live.find((e) => e.type === EventType.ApprovalRequested);
    const last = live[live.length - 1] as Primary;
    const observedOf = (e: Primary): Observation[] => (e as { observed?: Observation[] }).observed ?? [];
    // The held request is the exact request the agent sent: compare against it when there is one.
    const view = held ? heldView(held) : recordedView(last);
    const observed = held ? (held.request.observed ?? observedOf(held)) : observedOf(last);
    if (observed.length > 0) view.observed = observed.map((o) => o.kind);
    return { view, observed, answer: this.answer(last) };
  }

  private answer(e: Primary): Answer {
    switch (e.type) {
      case EventType.Message: {
        if (e.kind === "send") return { kind: "value", value: { event: e.id, seq: e.seq }, seq: e.seq };
        const reply = this.replies.get(e.id);
        if (!reply) return { kind: "pending", reason: `the log has no reply to request ${e.id} to ${e.to}` };
        if (reply.error) return { kind: "error", error: reply.error, seq: reply.seq };
        return { kind: "value", value: { body: reply.body }, seq: reply.seq };
      }
      case EventType.Reply:
      case EventType.Record:
        return { kind: "value", value: { event: e.id, seq: e.seq }, seq: e.seq };
      case EventType.Denied:
        return { kind: "error", error: e.error, seq: e.seq };
      case EventType.EffectStarted: {
        const done = this.completions.get(e.id);
        if (!done) return { kind: "pending", reason: `the log has no outcome of ${e.kind} ${e.target} (effect ${e.id})` };
        if (done.error) return { kind: "error", error: done.error, seq: done.seq };
        const effect: NonNullable<AnswerValue["effect"]> = { result: done.result, labels: done.labels };
        if (done.usage) effect.usage = done.usage;
        return { kind: "value", value: { event: done.id, seq: done.seq, effect }, seq: done.seq };
      }
      case EventType.ApprovalRequested: {
        const decided = this.decisions.get(e.id);
        if (!decided) return { kind: "pending", reason: `held for a human (approval ${e.id}) and undecided where the log ends` };
        if (decided.verdict === "approve") return { kind: "pending", reason: `approval ${e.id} was granted but the released ${e.op} is not in the log` };
        // What the kernel answers a refused or expired hold (services/kernel/state.ts).
        const why = decided.by === "kernel" ? "expired before anyone decided" : `was refused by ${decided.by}${decided.reason ? `: ${decided.reason}` : ""}`;
        return { kind: "error", error: { code: ErrorCode.Forbidden, message: `held action ${e.id} ${why}` }, seq: decided.seq };
      }
    }
  }
}

function recordedView(e: Primary): RecordedSyscall {
  const base = { event: e.id, seq: e.seq, type: e.type, bodyRecorded: true };
  switch (e.type) {
    case EventType.Message: {
      const view: RecordedSyscall = { ...base, op: e.kind, target: e.to, body: e.body };
      if (e.kind === "request" && e.deadline !== undefined) view.timeoutMs = e.deadline - e.at;
      return view;
    }
    case EventType.Reply:
      return e.error ? { ...base, op: SyscallOp.Reply, target: e.to, error: { code: e.error.code, message: e.error.message } } : { ...base, op: SyscallOp.Reply, target: e.to, body: e.body };
    case EventType.Denied: {
      // The whole refused request where the log has it; op and target only where it does not.
      if (e.request !== undefined) {
        const view: RecordedSyscall = { ...requestView(e.op, e.request), ...base };
        if (e.to !== undefined) view.target = e.to;
        return view;
      }
      const view: RecordedSyscall = { ...base, op: e.op, bodyRecorded: false };
      if (e.to !== undefined) view.target = e.to;
      return view;
    }
    case EventType.Record:
      return { ...base, op: SyscallOp.Record };
    case EventType.EffectStarted:
      return { ...base, op: e.kind, target: e.target, body: e.kind === "mem" ? { ...(e.args as Record<string, unknown>), op: e.op } : e.args };
    case EventType.ApprovalRequested:
      return heldView(e);
  }
}

function heldView(e: Extract<LogEvent, { type: "approval.requested" }>): RecordedSyscall {
  return { ...requestView(e.op, e.request), event: e.id, seq: e.seq, type: e.type, bodyRecorded: true };
}

/** The comparable form of a syscall request as the SDK sends it (what a held call records). */
function requestView(op: string, req: SyscallRequest): SyscallView {
  const view: SyscallView = { op };
  if (req.to !== undefined) view.target = req.to;
  switch (op) {
    case SyscallOp.Send:
      view.body = req.body ?? null;
      break;
    case SyscallOp.Request:
      view.body = req.body ?? null;
      if (req.timeoutMs !== undefined) view.timeoutMs = req.timeoutMs;
      break;
    case SyscallOp.Llm:
      // What the kernel records as the call's arguments (parseCompleteArgs): the params and the model.
      view.body = { ...(req.body as Record<string, unknown>), model: req.to };
      break;
    case SyscallOp.Tool:
      view.body = req.body ?? {};
      break;
    case SyscallOp.Reply:
      if (req.error) view.error = { code: req.error.code, message: req.error.message };
      else view.body = req.body ?? null;
      break;
    default:
      view.body = req.body;
  }
  return view;
}

// ------------------------------------------------------------------ one handler run

/** Thrown into handler code when replay stops (a divergence, or the log ends): not an agent error. */
class ReplayStop extends Error {
  constructor(why: string) {
    super(`replay stopped: ${why}`);
    this.name = "ReplayStop";
  }
}

interface RunOutcome {
  matched: number;
  divergence?: Divergence;
  incomplete?: IncompleteRun;
}

/**
 * The state of one handler run: the recorded steps, the comparison so far, and the order answers
 * are handed back in. Answers go back one at a time in the order the log recorded them, each
 * after the handler has done everything it can with the previous one, as they arrive live.
 */
class Run {
  matched = 0;
  divergence: Divergence | undefined;
  incomplete: IncompleteRun | undefined;
  private readonly queue: Array<{ seq: number; settle: () => void; stop: (err: ReplayStop) => void }> = [];
  private tick: NodeJS.Immediate | undefined;
  private stopResolve!: () => void;
  /** Resolves when the run stops early (divergence or the end of the log). */
  readonly stopped: Promise<void> = new Promise((resolve) => (this.stopResolve = resolve));
  private done = false;

  constructor(
    readonly info: ReplayedRun,
    readonly steps: Map<number, StepRecord>,
    private readonly rejections: number,
  ) {}

  get over(): boolean {
    return this.done;
  }

  /** Compares an issued syscall with the log; resolves with what the log answered. */
  issue(step: number, issued: SyscallView): Promise<AnswerValue> {
    const id = syscallId(this.info.id, step);
    if (this.done) return Promise.reject(new ReplayStop("already stopped"));
    if (issued.body !== undefined) {
      // Compare what would have reached the log: the body as the wire carries it (msgpack).
      try {
        issued.body = decode(encode(issued.body));
      } catch (err) {
        // Live, the SDK fails the same way before anything is sent, and the log has nothing.
        return Promise.reject(err instanceof Error ? err : new MaxwellError(ErrorCode.BadRequest, String(err)));
      }
    }
    const recorded = this.steps.get(step);
    if (!recorded) {
      let hint = "";
      if (this.steps.size === 0) hint = " (the log has no syscall of this run at all: unless the agent had not handled it yet where the log ends, the code now does what it did not)";
      else if (this.rejections > 0) hint = ` (the kernel rejected ${this.rejections} malformed syscall(s) of this agent; a rejection is logged without its syscall id)`;
      return this.diverge({ kind: "extra", run: this.info, syscall: id, issued, summary: `the code issued ${describe(issued)}, which the log does not have${hint}`, diff: viewDiff(undefined, issued) });
    }
    const differs = compare(recorded.view, issued);
    if (differs.length > 0) {
      return this.diverge({
        kind: "mismatch",
        run: this.info,
        syscall: id,
        recorded: recorded.view,
        issued,
        summary:
          describe(issued) === describe(recorded.view)
            ? `${describe(issued)}: ${differs.join(", ")} differ`
            : `the code issued ${describe(issued)} where the log recorded ${describe(recorded.view)}: ${differs.join(", ")} differ`,
        diff: viewDiff(recorded.view, issued),
      });
    }
    this.matched += 1;
    const answer = recorded.answer;
    if (answer.kind === "pending") {
      this.end({ run: this.info, syscall: id, reason: answer.reason });
      return Promise.reject(new ReplayStop(answer.reason));
    }
    return new Promise<AnswerValue>((resolve, reject) => {
      this.queue.push({
        seq: answer.seq,
        settle: () => (answer.kind === "value" ? resolve(answer.value) : reject(MaxwellError.fromWire(answer.error))),
        stop: reject,
      });
      this.schedule();
    });
  }

  /**
   * The value the log recorded for the next clock or random read: the one after `prior` among
   * the reads riding on syscall `step`.
   */
  observe(step: number, prior: ReadonlyArray<Observation["kind"]>, kind: Observation["kind"]): number {
    if (this.done) throw new ReplayStop("already stopped");
    const recorded = this.steps.get(step);
    const index = prior.length;
    const o = recorded?.observed[index];
    if (o && o.kind === kind) return o.value;
    const id = syscallId(this.info.id, step);
    const call = (k: Observation["kind"]): string => (k === "now" ? "ctx.now()" : "ctx.random()");
    const summary = !recorded
      ? `the code called ${call(kind)} before syscall ${id}, which the log does not have`
      : o
        ? `the code called ${call(kind)} where the log recorded ${call(o.kind)} (read ${index + 1} before ${id})`
        : `the code called ${call(kind)} ${index + 1} time(s) before ${id}; the log recorded ${recorded.observed.length} read(s) there`;
    const issued: SyscallView = { op: "(not issued yet)", observed: [...prior, kind] };
    const recordedKinds = recorded?.observed.map((x) => x.kind) ?? [];
    const divergence: Divergence = {
      kind: "observation",
      run: this.info,
      syscall: id,
      issued,
      summary,
      diff: lineDiff(JSON.stringify({ observed: recordedKinds }, null, 2), JSON.stringify({ observed: issued.observed }, null, 2)),
    };
    if (recorded) divergence.recorded = recorded.view;
    void this.diverge(divergence).catch(() => undefined);
    throw new ReplayStop(summary);
  }

  diverge(d: Divergence): Promise<never> {
    if (!this.done) {
      this.divergence = d;
      this.stop();
    }
    return Promise.reject(new ReplayStop(d.summary));
  }

  end(incomplete: IncompleteRun): void {
    if (this.done) return;
    this.incomplete = incomplete;
    this.stop();
  }

  private stop(): void {
    this.done = true;
    if (this.tick) clearImmediate(this.tick);
    const waiting = this.queue.splice(0);
    for (const w of waiting) w.stop(new ReplayStop("the run stopped"));
    this.stopResolve();
  }

  /** Hands back the earliest recorded answer once the handler has run as far as it can. */
  private schedule(): void {
    this.tick ??= setImmediate(() => {
      this.tick = undefined;
      if (this.done || this.queue.length === 0) return;
      let first = 0;
      for (let i = 1; i < this.queue.length; i++) if ((this.queue[i]?.seq ?? Infinity) < (this.queue[first]?.seq ?? Infinity)) first = i;
      const [next] = this.queue.splice(first, 1);
      next?.settle();
      if (this.queue.length > 0) this.schedule();
    });
  }
}

/** The replay context: the same syscall numbering as the live HandlerContext, answered by the log. */
class ReplayContext implements AgentContext {
  private step = 0;
  private observed: Array<Observation["kind"]> = [];
  replied = false;

  constructor(
    private readonly run: Run,
    readonly name: string,
    readonly message: Message | undefined,
    readonly log: Logger,
  ) {}

  private issue(view: SyscallView): Promise<AnswerValue> {
    const step = this.step++;
    if (this.observed.length > 0) {
      view.observed = this.observed;
      this.observed = [];
    }
    return this.run.issue(step, view);
  }

  get steps(): number {
    return this.step;
  }

  async send(to: string, body: unknown, _opts: SendOptions = {}): Promise<SendResult> {
    const r = await this.issue({ op: SyscallOp.Send, target: to, body: body ?? null });
    return { event: r.event as EventId, seq: r.seq as number };
  }

  async request<R = unknown>(to: string, body: unknown, opts: RequestOptions = {}): Promise<R> {
    const r = await this.issue({ op: SyscallOp.Request, target: to, body: body ?? null, timeoutMs: opts.timeoutMs ?? 30_000 });
    return r.body as R;
  }

  async reply(body: unknown): Promise<void> {
    const requester = this.requester();
    this.replied = true;
    await this.issue({ op: SyscallOp.Reply, target: requester, body: body ?? null });
  }

  async replyError(error: MaxwellError): Promise<void> {
    const requester = this.requester();
    this.replied = true;
    await this.issue({ op: SyscallOp.Reply, target: requester, error: { code: error.code, message: error.message } });
  }

  async llm(params: { model: string; max_tokens: number; messages: unknown[]; [key: string]: unknown }): Promise<LlmResponse> {
    const { model, ...rest } = params;
    const r = await this.issue({ op: SyscallOp.Llm, target: model, body: { ...rest, model } });
    const effect = r.effect ?? { labels: [] };
    const out: LlmResponse = { message: effect.result as LlmResponse["message"], labels: effect.labels };
    if (effect.usage) out.usage = effect.usage;
    return out;
  }

  async tool<T = unknown>(name: string, args: Record<string, unknown>): Promise<EffectResult<T>> {
    const r = await this.issue({ op: SyscallOp.Tool, target: name, body: args ?? {} });
    return { result: r.effect?.result as T, labels: r.effect?.labels ?? [] };
  }

  async memory<T = unknown>(namespace: string, op: string, args: Record<string, unknown> = {}): Promise<EffectResult<T>> {
    const r = await this.issue({ op: SyscallOp.Mem, target: namespace, body: { ...args, op } });
    return { result: r.effect?.result as T, labels: r.effect?.labels ?? [] };
  }

  now(): number {
    return this.observe("now");
  }

  random(): number {
    return this.observe("random");
  }

  private observe(kind: Observation["kind"]): number {
    const value = this.run.observe(this.step, this.observed, kind);
    this.observed.push(kind);
    return value;
  }

  /** Issues the `record` syscall for reads not yet carried, as the live runner does before acking. */
  async flush(): Promise<void> {
    if (this.observed.length === 0) return;
    await this.issue({ op: SyscallOp.Record });
  }

  private requester(): string {
    if (!this.message || this.message.kind !== "request") {
      throw new MaxwellError(ErrorCode.BadRequest, "reply is only possible while handling a request");
    }
    if (this.replied) throw new MaxwellError(ErrorCode.Conflict, "this request was already answered");
    return this.message.from;
  }
}

/** Runs one delivery (or `onStart`) the way the live runner does, against the log. */
async function replayRun(def: AgentDefinition, index: ReplayLog, info: ReplayedRun, log: Logger, timeoutMs: number): Promise<RunOutcome> {
  if (index.untouched(info.id)) return { matched: 0, incomplete: { run: info, reason: "the agent had not handled this request where the log ends (no syscall of it, no reply)" } };
  const run = new Run(info, index.steps(info.id), index.rejections);
  let message: Message | undefined;
  if (info.kind !== "start") {
    const event = index.delivery(info.id) as MessageEvent;
    message = messageOf(event, false);
  }
  const ctx = new ReplayContext(run, index.name, message, log);
  const handle = async (): Promise<void> => {
    if (!message) {
      if (!def.onStart) return;
      try {
        await def.onStart(ctx);
        await ctx.flush();
      } catch (err) {
        if (!run.over) run.end({ run: info, reason: `onStart failed: ${MaxwellError.from(err).message}` });
      }
      return;
    }
    let result: unknown;
    let failure: unknown;
    try {
      result = await def.onMessage(message, ctx);
    } catch (err) {
      failure = err;
    }
    if (run.over) return;
    try {
      if (failure !== undefined) {
        const e = MaxwellError.from(failure);
        if (e.code === ErrorCode.Unavailable) {
          run.end({ run: info, reason: `the handler failed with 'unavailable' (${e.message}); live, the delivery is tried again` });
          return;
        }
        if (message.kind === "request" && !ctx.replied) await ctx.replyError(e);
      } else if (message.kind === "request" && !ctx.replied) {
        await ctx.reply(result === undefined ? null : result);
      }
      await ctx.flush();
    } catch (err) {
      if (!run.over) run.end({ run: info, reason: `the delivery could not be finished (${MaxwellError.from(err).message}); live, it is tried again` });
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
    timer.unref();
  });
  const finished = await Promise.race([handle().then(() => "done" as const), run.stopped.then(() => "stopped" as const), timedOut]);
  clearTimeout(timer);
  if (finished === "timeout" && !run.over) {
    run.end({ run: info, reason: `the handler did not finish within ${timeoutMs} ms (waiting on something other than a syscall?)` });
  }
  if (finished === "done" && !run.over) {
    // Whatever the log recorded beyond the last syscall the code issued, the code left out.
    const missing = [...run.steps.keys()].filter((s) => s >= ctx.steps).sort((a, b) => a - b)[0];
    const recorded = missing === undefined ? undefined : run.steps.get(missing);
    if (missing !== undefined && recorded) {
      await run
        .diverge({
          kind: "missing",
          run: info,
          syscall: syscallId(info.id, missing),
          recorded: recorded.view,
          summary: `the log recorded ${describe(recorded.view)}, which the code did not issue (it issued ${ctx.steps} syscall(s))`,
          diff: viewDiff(recorded.view, undefined),
        })
        .catch(() => undefined);
    }
  }
  const outcome: RunOutcome = { matched: run.matched };
  if (run.divergence) outcome.divergence = run.divergence;
  else if (run.incomplete) outcome.incomplete = run.incomplete;
  return outcome;
}

// ------------------------------------------------------------------ comparing

/**
 * A JSON-safe copy with object keys sorted: the canonical form both sides are compared in (after
 * the issued body went through the wire codec). Bytes and dates stay distinguishable; fields a
 * view leaves unset are dropped.
 */
function canonical(value: unknown, depth = 0): unknown {
  if (depth > 100) return "[too deep]";
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isFinite(value) ? value : { $number: String(value) };
  if (typeof value === "bigint") return Number(value);
  if (value === undefined || typeof value === "function" || typeof value === "symbol") return undefined;
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("base64") };
  if (value instanceof Date) return { $date: value.getTime() };
  if (Array.isArray(value)) return value.map((v) => canonical(v, depth + 1) ?? null);
  const entries = value instanceof Map ? [...value.entries()].map(([k, v]) => [String(k), v] as const) : Object.entries(value as Record<string, unknown>);
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const c = canonical(v, depth + 1);
    if (c !== undefined) out[k] = c;
  }
  return out;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

/** The fields in which an issued syscall differs from the recorded one. */
function compare(recorded: RecordedSyscall, issued: SyscallView): string[] {
  const differs: string[] = [];
  if (recorded.op !== issued.op) differs.push("op");
  if (recorded.target !== undefined && recorded.target !== issued.target) differs.push("target");
  if (recorded.bodyRecorded) {
    if (!same(recorded.body, withoutSealedContent(recorded, issued.body))) differs.push(recorded.op === SyscallOp.Tool ? "args" : "body");
    if (!same(recorded.error, issued.error)) differs.push("error");
  }
  if (recorded.timeoutMs !== undefined && issued.timeoutMs !== undefined && recorded.timeoutMs !== issued.timeoutMs) differs.push("timeoutMs");
  if (!same(recorded.observed ?? [], issued.observed ?? [])) differs.push("ctx.now()/ctx.random() reads");
  return differs;
}

/**
 * Memory writes are logged with their value (and vector) sealed under a key that erasure may have
 * destroyed; replay compares everything else of them (op, namespace, key, tags, ttl, version).
 */
function withoutSealedContent(recorded: RecordedSyscall, body: unknown): unknown {
  const logged = recorded.body as Record<string, unknown> | undefined;
  if (recorded.op !== SyscallOp.Mem || typeof logged !== "object" || logged === null || !("sealed" in logged)) return body;
  if (typeof body !== "object" || body === null) return body;
  const { value: _value, vector: _vector, ...rest } = body as Record<string, unknown>;
  return { ...rest, sealed: logged["sealed"] };
}

function describe(v: SyscallView): string {
  if (v.op === SyscallOp.Mem) {
    const memOp = (v.body as Record<string, unknown> | undefined)?.["op"];
    return `mem ${String(memOp ?? "?")} ${v.target ?? ""}`.trim();
  }
  if (v.op === SyscallOp.Reply) return `reply to ${v.target ?? "?"}${v.error ? ` (error ${v.error.code})` : ""}`;
  if (v.op === SyscallOp.Record) return "record (of ctx.now()/ctx.random() reads)";
  return `${v.op}${v.target !== undefined ? ` ${v.target}` : ""}`;
}

/** The compared fields of a view as pretty JSON, keys sorted. */
function pretty(v: SyscallView | undefined, recorded?: RecordedSyscall): string {
  if (!v) return "";
  const shown: Record<string, unknown> = { op: v.op };
  if (v.target !== undefined) shown["target"] = v.target;
  if (recorded && !recorded.bodyRecorded) shown["body"] = "(not recorded: the log keeps op and target of a denied syscall)";
  else if (v.body !== undefined) shown["body"] = v.body;
  if (v.error !== undefined) shown["error"] = v.error;
  if (v.timeoutMs !== undefined) shown["timeoutMs"] = v.timeoutMs;
  if (v.observed !== undefined && v.observed.length > 0) shown["observed"] = v.observed;
  return JSON.stringify(canonical(shown), null, 2);
}

function viewDiff(recorded: RecordedSyscall | undefined, issued: SyscallView | undefined): string {
  return lineDiff(pretty(recorded, recorded), pretty(issued, recorded));
}

/**
 * A unified-style line diff: `-` lines only in `before`, `+` lines only in `after`, and up to
 * `context` unchanged lines around each change (`…` marks what is left out).
 */
export function lineDiff(before: string, after: string, context = 3): string {
  const a = before === "" ? [] : before.split("\n");
  const b = after === "" ? [] : after.split("\n");
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const ops: Array<{ tag: " " | "-" | "+"; line: string }> = a.slice(0, start).map((line) => ({ tag: " ", line }));
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  if (midA.length * midB.length > 4_000_000) {
    // Too large for the table below: show the whole middle as removed, then added.
    for (const line of midA) ops.push({ tag: "-", line });
    for (const line of midB) ops.push({ tag: "+", line });
  } else {
    // Longest common subsequence, by suffix lengths.
    const n = midA.length;
    const m = midB.length;
    const lcs = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * (m + 1) + j] = midA[i] === midB[j] ? (lcs[(i + 1) * (m + 1) + j + 1] ?? 0) + 1 : Math.max(lcs[(i + 1) * (m + 1) + j] ?? 0, lcs[i * (m + 1) + j + 1] ?? 0);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && midA[i] === midB[j]) {
        ops.push({ tag: " ", line: midA[i++] as string });
        j++;
      } else if (i < n && (j === m || (lcs[(i + 1) * (m + 1) + j] ?? 0) >= (lcs[i * (m + 1) + j + 1] ?? 0))) {
        ops.push({ tag: "-", line: midA[i++] as string });
      } else {
        ops.push({ tag: "+", line: midB[j++] as string });
      }
    }
  }
  for (const line of a.slice(endA)) ops.push({ tag: " ", line });
  if (!ops.some((op) => op.tag !== " ")) return ops.map((op) => `  ${op.line}`).join("\n");
  const keep = ops.map((op, k) => op.tag !== " " || ops.slice(Math.max(0, k - context), k + context + 1).some((o) => o.tag !== " "));
  const out: string[] = [];
  let skipped = false;
  ops.forEach((op, k) => {
    if (keep[k]) {
      out.push(`${op.tag} ${op.line}`);
      skipped = false;
    } else if (!skipped) {
      out.push("  …");
      skipped = true;
    }
  });
  return out.join("\n");
}

// ------------------------------------------------------------------ reporting

function runName(run: ReplayedRun): string {
  if (run.kind === "start") return `onStart run ${run.id} (first syscall #${run.seq})`;
  return `delivery #${run.seq} ${run.id} (${run.kind} from ${run.from ?? "?"}, trace ${run.trace ?? "?"})`;
}

/** The report as text for a person. */
export function formatReplayReport(r: ReplayReport): string {
  const lines: string[] = [];
  const runs = `${r.deliveries} deliver${r.deliveries === 1 ? "y" : "ies"}${r.starts > 0 ? ` and ${r.starts} onStart run${r.starts === 1 ? "" : "s"}` : ""}`;
  if (r.identical) {
    lines.push(`identical: ${r.syscalls} syscall${r.syscalls === 1 ? "" : "s"} matched over ${runs}`);
  } else if (r.divergence) {
    const d = r.divergence;
    lines.push(`divergence (${d.kind}) at syscall ${d.syscall} of agent ${r.agent}`);
    lines.push(`  in ${runName(d.run)}`);
    lines.push(`  ${d.summary}`);
    if (d.recorded) lines.push(`  the log recorded: ${describe(d.recorded)}  (#${d.recorded.seq} ${d.recorded.type} ${d.recorded.event})`);
    else lines.push("  the log recorded: nothing under this syscall id");
    lines.push(`  the code issued:  ${d.issued ? (d.kind === "observation" ? "a clock/random read" : describe(d.issued)) : "nothing"}`);
    lines.push("  diff (- recorded, + issued):");
    for (const line of d.diff.split("\n")) lines.push(`    ${line}`);
    lines.push(`${r.syscalls} syscall${r.syscalls === 1 ? "" : "s"} matched before it (${runs} replayed)`);
  }
  for (const i of r.incomplete) {
    lines.push(`note: the log ends inside ${runName(i.run)}${i.syscall ? ` at ${i.syscall}` : ""}: ${i.reason}`);
  }
  return lines.join("\n");
}
