/**
 * The kernel service: the reference monitor. It receives every actor's syscalls, takes the actor
 * from the subject the server let it publish on, validates, decides (decide.ts), appends the
 * decision and the message to the log in one write (appender.ts), and only then answers. It is
 * also the identity authority: it mints every agent's and principal's credential.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { SpanKind, SpanStatusCode, context, trace, type Span } from "@opentelemetry/api";
import {
  AdminOp,
  AgentState,
  ErrorCode,
  EVENT_VERSION,
  EventType,
  FORBIDDEN_HEADERS,
  GENESIS_PREV,
  Header,
  KERNEL_QUEUE,
  LOG_STREAM,
  MaxwellError,
  SyscallOp,
  checkpointMessage,
  decodeMap,
  encode,
  entryHash,
  formatTraceparent,
  isName,
  isSyscallOp,
  newEventId,
  newSpanId,
  newTraceId,
  parseAck,
  parseSyscallRequest,
  parseSyscallSubject,
  parseTraceparent,
  ServiceName,
  serviceSubjects,
  subjects,
  type EventId,
  type IdentityKind,
  type LogEvent,
  type PendingEvent,
  type ServiceReply,
  type SyscallReply,
  type ToolManifest,
  type WireError,
} from "../../src/protocol/mod.js";
import {
  connectNats,
  ensureAgentConsumers,
  ensureLogStream,
  jetstream,
  jetstreamManager,
  logPublisher,
  readEntriesAt,
  readLog,
  readRange,
  readTail,
  requestRaw,
  type JetStreamClient,
  type JetStreamManager,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "../../src/transport/connection.js";
import { READ_SEQS_MAX } from "../../src/runtime/admin.js";
import { claimsUpdateSubject, grantsFor, loadKey, maxwellAccountJwt, mintUser, sign, systemCreds, verifySignature, writeSecret, type KeyPair } from "../../src/transport/identity.js";
import { dataLayout } from "../../src/runtime/paths.js";
import type {
  AdminReply,
  ApprovalSummary,
  BudgetRow,
  BudgetSetRequest,
  ToolRegisterRequest,
  ToolRegisterResult,
  ToolSummary,
  ControlRequest,
  ControlResult,
  IdentitySummary,
  KernelStatus,
  PolicyApplyResult,
  PolicyTestRequest,
  PolicyTestResult,
  ReadRequest,
  ReadResult,
  RegisterRequest,
  RegisterResult,
  SnapshotCheck,
  StateReplayResult,
} from "../../src/runtime/admin.js";
import type { Logger } from "../../src/runtime/logger.js";
import { Appender } from "./appender.js";
import { Deliverer } from "./deliverer.js";
import { RESERVED_NAMES, decideSyscall, timeoutReply, type MemoryRules, type Outcome } from "./decide.js";
import { EffectRunner } from "./effects.js";
import { manifestHash, validateManifest } from "../../src/protocol/manifest.js";
import { PolicyEngine } from "./policy.js";
import { whatIf } from "./what-if.js";
import { evolve, initialState, stateDigest, stateSummary, syscallKey, type KernelState } from "./state.js";
import { SnapshotStore, type LoadedSnapshot, type SnapshotChecks, type SnapshotInfo } from "./snapshot.js";

const BUDGET_FIELDS = ["tokens", "microUsd", "toolCalls", "messagesPerMinute", "concurrent", "pendingApprovals", "depth"];

/** Largest syscall payload the kernel accepts. */
export const MAX_SYSCALL_BYTES = 256 * 1024;

export interface KernelOptions {
  servers: string;
  /** The kernel's own NATS credential. */
  creds: string;
  /** Account signing key: mints every identity's credential. */
  accountKey: string;
  /** Checkpoint signing key. */
  kernelKey: string;
  /** Policy file (Cedar). Created with the default set when missing. */
  policyFile: string;
  defaultPolicyText: string;
  /** Where the last checkpoint is kept outside the log (truncation detection). */
  anchorFile: string;
  /**
   * Operator and system-account keys: needed to revoke a killed agent's credential (the account
   * JWT is re-signed with the revocation and pushed to the server). Without them, kill is refused.
   */
  operatorKey?: string;
  systemKey?: string;
  /** Where revocations are kept so a restarted server starts with them. */
  revocationsFile?: string;
  log: Logger;
  checkpointEvery?: number;
  checkpointIntervalMs?: number;
  /** The data directory: where the secret store and memory keys live (absent: no secrets). */
  dataDir?: string;
  /** How long a held action waits for a human (default 15 minutes). */
  approvalTtlMs?: number;
  memory?: MemoryRules;
  /**
   * Take over a log another kernel started (a fork's sandbox, `maxwell replay fork`): when the
   * key in effect in the log is not this kernel's, append a `kernel.fork` event handing over to
   * this kernel's key, with fresh credentials for the identities (written to `<data>/creds`).
   * Without it, such a log is refused.
   */
  fork?: boolean;
  /** Where state snapshots are kept (absent: none taken, the whole log folded at start). */
  snapshotDir?: string;
  /**
   * Events between snapshots; by default 50,000 or the number of remembered syscalls and
   * deliveries, whichever is larger. One is also taken at a clean stop.
   */
  snapshotEvery?: number;
}

/** Entries a fold applies before it lets other work run. */
const FOLD_YIELD_EVERY = 512;

/** Events between state snapshots unless configured otherwise. */
const SNAPSHOT_EVERY = 50_000;

const tracer = trace.getTracer("maxwell-kernel");

function decodeJson(bytes: Uint8Array): Record<string, unknown> {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch {
    return {};
  }
}

type Traceparent = NonNullable<ReturnType<typeof parseTraceparent>>;

export class Kernel {
  private nc!: NatsConnection;
  private jsm!: JetStreamManager;
  private appender!: Appender;
  private readonly state: KernelState = initialState();
  private readonly policy = new PolicyEngine();
  private readonly inflight = new Map<string, Promise<SyscallReply>>();
  private readonly answering = new Set<EventId>();
  private readonly timers = new Map<EventId, NodeJS.Timeout>();
  private readonly subs: Subscription[] = [];
  private accountKp!: KeyPair;
  private kernelKp!: KeyPair;
  /** The kernel key's public half (derived once: nkeys derives it in pure JS on every call). */
  private kernelPublicKey!: string;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private sinceCheckpoint = 0;
  /** Admin writes (registrations, policy applies, control) run one at a time, in order. */
  private adminWrites: Promise<unknown> = Promise.resolve();
  private deliverer!: Deliverer;
  private effects!: EffectRunner;
  private readonly approvalTimers = new Map<EventId, NodeJS.Timeout>();
  /** Held actions whose decision (a human's, or the expiry) is being written. */
  private readonly deciding = new Set<EventId>();
  private js!: JetStreamClient;
  private readonly startedAt = Date.now();
  private stopping = false;
  private snapshots: SnapshotStore | undefined;
  /** Seq of the newest snapshot taken or loaded (0: none). */
  private snapshotSeq = 0;
  private snapshotting = false;

  constructor(private readonly opts: KernelOptions) {}

  /** Connects, rebuilds state from the log, and starts serving. */
  async start(): Promise<void> {
    const log = this.opts.log;
    this.accountKp = loadKey(this.opts.accountKey);
    this.kernelKp = loadKey(this.opts.kernelKey);
    this.kernelPublicKey = this.kernelKp.getPublicKey();
    this.nc = await connectNats({ servers: this.opts.servers, creds: this.opts.creds, name: "maxwell-kernel" });
    this.jsm = await jetstreamManager(this.nc);
    const js = jetstream(this.nc);
    this.js = js;
    await ensureLogStream(this.jsm);

    const t0 = performance.now();
    let expectedPrev = GENESIS_PREV;
    const snapshot = await this.loadSnapshot();
    if (snapshot) {
      Object.assign(this.state, snapshot.state);
      expectedPrev = snapshot.info.hash;
    }
    await this.fold(this.state, expectedPrev, 0, () => undefined).catch((err: unknown) => {
      if (err instanceof MaxwellError && err.code === ErrorCode.Conflict) {
        throw new MaxwellError(ErrorCode.Conflict, `${err.message}; refusing to append to it. Run 'maxwell verify' to see where.`);
      }
      throw err;
    });
    log.info(
      { events: this.state.events, seq: this.state.head.seq, ...(snapshot ? { fromSnapshot: snapshot.info.seq } : {}), ms: Math.round(performance.now() - t0) },
      snapshot ? "state loaded from a snapshot and the log after it" : "state rebuilt from the log",
    );
    this.snapshotSeq = snapshot?.info.seq ?? 0;

    this.deliverer = new Deliverer(this.nc, () => this.state.head.seq, log);
    this.appender = new Appender({
      publish: logPublisher(this.nc),
      readTail: () => readTail(this.jsm),
      readRange: (from, to) => readRange(this.jsm, from, to),
      head: this.state.head,
      onStored: (event, subject, hash, data, traceparent) => this.onStored(event, subject, hash, data, traceparent),
      onError: (err) => log.warn({ err: (err as Error).message }, "log append failed; resyncing with the stream tail"),
    });

    if (this.state.kernelKey === undefined) {
      await this.appendKernel("genesis", { type: EventType.Genesis, kernelKey: this.kernelPublicKey });
    } else if (this.state.kernelKey !== this.kernelPublicKey) {
      if (!this.opts.fork) throw new MaxwellError(ErrorCode.Conflict, `the log was started by kernel key ${this.state.kernelKey}, but this kernel holds ${this.kernelPublicKey}`);
      await this.takeOverFork(this.state.kernelKey);
    }
    await this.loadPolicies();

    this.effects = new EffectRunner({
      nc: this.nc,
      appender: this.appender,
      state: this.state,
      log,
      ...(this.opts.dataDir ? { dataDir: this.opts.dataDir } : {}),
    });
    for (const [id, deadline] of this.state.pending) this.armTimeout(id, deadline);
    for (const approval of this.state.approvals.values()) {
      if (approval.status === "pending") this.armApproval(approval.id, approval.expiresAt);
    }
    await this.effects.recoverInterrupted();
    if (this.revocations().size > 0) await this.pushRevocations();

    for (const identity of this.state.identities.values()) {
      if (identity.kind !== "agent") continue;
      if (identity.control === AgentState.Paused) this.deliverer.setPaused(identity.name, true);
      await this.deliverer.add(identity.name);
    }

    this.subs.push(
      this.nc.subscribe(subjects.allSyscalls(), {
        queue: KERNEL_QUEUE,
        callback: (err, msg) => {
          if (err) log.error({ err: err.message }, "syscall subscription error");
          else void this.onSyscall(msg);
        },
      }),
      this.nc.subscribe(subjects.allAdmin(), {
        queue: KERNEL_QUEUE,
        callback: (err, msg) => {
          if (err) log.error({ err: err.message }, "admin subscription error");
          else void this.onAdmin(msg);
        },
      }),
    );
    await this.nc.flush();
    for (const approval of this.state.approvals.values()) {
      if (approval.status === "approved" && this.state.syscalls.get(syscallKey(approval.actor, approval.request.id))?.held === approval.id) {
        void this.release(approval.id);
      }
    }
    const interval = this.opts.checkpointIntervalMs ?? 5000;
    this.checkpointTimer = setInterval(() => {
      if (this.sinceCheckpoint > 0) void this.checkpoint().catch((err: unknown) => log.error({ err: String(err) }, "checkpoint failed"));
    }, interval);
    this.checkpointTimer.unref();
    log.info({ seq: this.state.head.seq, identities: this.state.identities.size, policySet: this.policy.policySet.hash.slice(0, 12) }, "kernel serving");
  }

  /** Stops taking syscalls, finishes what is in flight, writes a final checkpoint, disconnects. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    for (const sub of this.subs) sub.unsubscribe();
    for (const t of this.timers.values()) clearTimeout(t);
    for (const t of this.approvalTimers.values()) clearTimeout(t);
    await Promise.allSettled([...this.inflight.values()]);
    await this.appender.drain();
    await this.deliverer.stop();
    if (this.sinceCheckpoint > 0) await this.checkpoint().catch(() => undefined);
    if (this.state.head.seq > this.snapshotSeq) await this.saveSnapshot();
    await this.snapshots?.close().catch(() => undefined);
    this.appender.close();
    await this.nc.drain().catch(() => undefined);
    this.opts.log.info({ seq: this.state.head.seq }, "kernel stopped");
  }

  /** Resolves when the kernel's NATS connection closes (for main.ts). */
  closed(): Promise<void | Error> {
    return this.nc.closed();
  }

  // ---------------------------------------------------------------- syscalls

  private async onSyscall(msg: Msg): Promise<void> {
    const parsed = parseSyscallSubject(msg.subject);
    const actor = parsed && isName(parsed.actor) ? parsed.actor : undefined;
    if (msg.reply && !(actor !== undefined && msg.reply.startsWith(`${subjects.inboxPrefix(actor)}.`))) {
      // The kernel may publish anywhere; answering on a caller-chosen subject would let a caller
      // aim the kernel's answer into the log or at another actor. Refuse, record, stay silent.
      await this.reject(msg, actor, new MaxwellError(ErrorCode.BadRequest, `reply subject '${msg.reply.slice(0, 200)}' is not under the caller's inbox ${actor ? subjects.inboxPrefix(actor) : "mx.rep.<actor>"}.`)).catch(() => undefined);
      return;
    }
    if (parsed?.op === SyscallOp.Ack && actor !== undefined) {
      await this.onAck(msg, actor);
      return;
    }
    const tp = parseTraceparent(msg.headers?.get(Header.TraceParent));
    const span = tracer.startSpan(`mx.syscall ${parsed?.op ?? "?"}`, { kind: SpanKind.SERVER, attributes: { "mx.actor": actor ?? "?" } }, this.parentContext(tp));
    let answered = false;
    const answer = (reply: SyscallReply): void => {
      if (answered) return;
      answered = true;
      if (!reply.ok) span.setStatus({ code: SpanStatusCode.ERROR, message: reply.error.code });
      if (msg.reply) msg.respond(encode(reply));
    };
    try {
      answer(await this.handleSyscall(msg, actor, parsed?.op, tp, span, answer));
    } catch (err) {
      // handleSyscall records rejections itself; this is the last line against a crash.
      const error = MaxwellError.from(err).toWire();
      this.opts.log.error({ err: String(err), subject: msg.subject }, "syscall failed unexpectedly");
      answer({ ok: false, error });
    } finally {
      span.end();
    }
  }

  /** Acks are transport-level: applied to the actor's own deliveries, never logged unless malformed. */
  private async onAck(msg: Msg, actor: string): Promise<void> {
    try {
      if (msg.data.length > MAX_SYSCALL_BYTES) throw new MaxwellError(ErrorCode.BadRequest, `ack of ${msg.data.length} bytes exceeds the limit of ${MAX_SYSCALL_BYTES}`);
      this.deliverer.ack(actor, parseAck(decodeMap(msg.data)));
      if (msg.reply) msg.respond(encode({ ok: true, result: { event: "", seq: this.state.head.seq } }));
    } catch (err) {
      const reply = await this.reject(msg, actor, MaxwellError.from(err, ErrorCode.BadRequest)).catch(() => undefined);
      if (msg.reply && reply) msg.respond(encode(reply));
    }
  }

  private parentContext(tp: Traceparent | undefined) {
    if (!tp) return context.active();
    return trace.setSpanContext(context.active(), { traceId: tp.traceId, spanId: tp.spanId, traceFlags: tp.flags, isRemote: true });
  }

  /** Decides and executes a syscall; resolves with its answer (`answer` may have sent it already). */
  private async handleSyscall(
    msg: Msg,
    actor: string | undefined,
    op: string | undefined,
    tp: Traceparent | undefined,
    span: Span,
    answer: (reply: SyscallReply) => void,
  ): Promise<SyscallReply> {
    let request;
    try {
      if (actor === undefined) throw new MaxwellError(ErrorCode.BadRequest, `malformed syscall subject '${msg.subject}'`);
      if (op === undefined || !isSyscallOp(op)) {
        throw new MaxwellError(ErrorCode.BadRequest, `unknown syscall '${String(op)}': expected one of ${Object.values(SyscallOp).join(", ")}`);
      }
      if (msg.data.length > MAX_SYSCALL_BYTES) {
        throw new MaxwellError(ErrorCode.BadRequest, `syscall payload of ${msg.data.length} bytes exceeds the limit of ${MAX_SYSCALL_BYTES}`);
      }
      if (msg.headers) {
        for (const [name] of msg.headers) {
          if (FORBIDDEN_HEADERS.includes(name.toLowerCase())) {
            throw new MaxwellError(ErrorCode.BadRequest, `header '${name}' is refused: the kernel takes actor and principal from the authenticated connection`);
          }
        }
      }
      request = parseSyscallRequest(decodeMap(msg.data));
    } catch (err) {
      return this.reject(msg, actor, MaxwellError.from(err, ErrorCode.BadRequest));
    }

    const key = syscallKey(actor, request.id);
    const running = this.inflight.get(key);
    if (running) return running;
    const work = this.execute(actor, op, request, msg, tp, span, answer);
    this.inflight.set(key, work);
    try {
      return await work;
    } finally {
      this.inflight.delete(key);
    }
  }

  private decide(actor: string, op: SyscallOp, request: ReturnType<typeof parseSyscallRequest>, headerTrace?: string, approved?: EventId): Outcome {
    return decideSyscall(this.state, this.policy, {
      actor,
      op,
      request,
      now: Date.now(),
      ...(headerTrace ? { headerTrace: headerTrace as never } : {}),
      newId: newEventId,
      newTrace: newTraceId,
      ...(approved ? { approved } : {}),
      ...(this.opts.approvalTtlMs ? { approvalTtlMs: this.opts.approvalTtlMs } : {}),
      ...(this.opts.memory ? { memory: this.opts.memory } : {}),
    });
  }

  private async execute(
    actor: string,
    op: SyscallOp,
    request: ReturnType<typeof parseSyscallRequest>,
    msg: Msg,
    tp: Traceparent | undefined,
    span: Span,
    answer: (reply: SyscallReply) => void,
  ): Promise<SyscallReply> {
    let outcome;
    try {
      outcome = this.decide(actor, op, request, tp?.traceId);
    } catch (err) {
      return this.reject(msg, actor, MaxwellError.from(err, ErrorCode.BadRequest));
    }
    return this.carryOut(outcome, actor, op, span, answer, (error) => this.reject(msg, actor, error), tp);
  }

  /** Executes a decision: appends its events, runs its effect, answers. */
  private async carryOut(
    outcome: Outcome,
    actor: string,
    op: string,
    span: Span | undefined,
    answer: (reply: SyscallReply) => void,
    reject: (error: MaxwellError) => Promise<SyscallReply>,
    tp?: Traceparent,
  ): Promise<SyscallReply> {
    if (outcome.kind === "repeat") {
      if (outcome.completedSeq !== undefined) return this.effects.answerFromLog(outcome.completedSeq, this.jsm);
      return outcome.reply;
    }
    const event = outcome.event;
    if (event.type === EventType.Reply) {
      if (this.answering.has(event.inReplyTo)) {
        return reject(new MaxwellError(ErrorCode.Conflict, `request ${event.inReplyTo} is already being answered`));
      }
      this.answering.add(event.inReplyTo);
    }
    if (event.type === EventType.ApprovalDecided) {
      // One decision at a time per held action: a second (or the expiry) must see the first's result.
      if (this.deciding.has(event.approval)) return reject(new MaxwellError(ErrorCode.Conflict, `held action ${event.approval} is being decided right now`));
      this.deciding.add(event.approval);
    }
    const recording = span?.isRecording() ?? false;
    if (recording && span) {
      if ("decision" in event) {
        span.setAttribute("mx.decision", event.decision.effect);
        span.setAttribute("mx.policies", event.decision.policies.join(","));
      }
      if ("trace" in event) span.setAttribute("mx.trace", event.trace);
    }
    // With no telemetry SDK the span is a no-op with an all-zero id; reuse the caller's span id then.
    const spanId = recording && span ? span.spanContext().spanId : (tp?.spanId ?? newSpanId());
    const traceparent = "trace" in event ? formatTraceparent(event.trace, spanId) : undefined;
    if (outcome.kind === "effect") return this.effects.run(outcome, traceparent);
    if (outcome.charge) this.state.budgets.hold(outcome.charge);
    try {
      const stored = await this.appender.append(outcome.subject, outcome.msgId, () => event, traceparent);
      // Answer at once: this runs before the connection flushes, so the answer leaves in the same
      // write as the deliveries the append just handed over.
      const reply = outcome.answer(stored);
      answer(reply);
      if (event.type === EventType.Denied) {
        this.opts.log.info({ actor, op, to: event.to, code: event.error.code, policies: event.decision.policies }, "denied");
      } else if (event.type === EventType.ApprovalRequested) {
        this.opts.log.warn({ actor, op, approval: event.id, reason: event.reason, expiresAt: new Date(event.expiresAt).toISOString() }, "action held for a human decision");
      } else if (event.type === EventType.ApprovalDecided) {
        this.opts.log.info({ approval: event.approval, verdict: event.verdict, by: event.by }, "held action decided");
      }
      if (outcome.release !== undefined) void this.release(outcome.release);
      return reply;
    } finally {
      if (outcome.charge) this.state.budgets.release(outcome.charge);
      if (event.type === EventType.Reply) this.answering.delete(event.inReplyTo);
      if (event.type === EventType.ApprovalDecided) this.deciding.delete(event.approval);
    }
  }

  /** Carries out a held syscall a human approved: decided again (all but the hold), then executed. */
  private async release(approvalId: EventId): Promise<void> {
    const approval = this.state.approvals.get(approvalId);
    if (!approval) return;
    const key = syscallKey(approval.actor, approval.request.id);
    const running = this.inflight.get(key);
    if (running) return;
    const work = (async (): Promise<SyscallReply> => {
      let outcome: Outcome;
      try {
        outcome = this.decide(approval.actor, approval.op as SyscallOp, approval.request, undefined, approvalId);
      } catch (err) {
        this.opts.log.error({ approval: approvalId, err: String(err) }, "approved action could not be decided");
        return { ok: false, error: MaxwellError.from(err).toWire() };
      }
      return this.carryOut(outcome, approval.actor, approval.op, undefined, () => undefined, async (error) => ({ ok: false, error: error.toWire() }));
    })();
    this.inflight.set(key, work);
    try {
      const reply = await work;
      this.opts.log.info({ approval: approvalId, actor: approval.actor, op: approval.op, ok: reply.ok }, "approved action carried out");
    } catch (err) {
      this.opts.log.error({ approval: approvalId, err: String(err) }, "approved action failed");
    } finally {
      this.inflight.delete(key);
    }
  }

  /**
   * Tells every principal whom the policies allow to decide this held action, on its own inbox
   * (`maxwell approvals --watch --as NAME` listens there). Best effort: the log is the record.
   */
  private notifyApprovers(event: Extract<LogEvent, { type: "approval.requested" }>): void {
    const agent = this.state.identities.get(event.actor);
    if (!agent) return;
    const notice = encode({ approval: event.id, actor: event.actor, principal: event.principal, op: event.op, to: event.request.to, body: event.request.body ?? null, reason: event.reason, labels: event.labels, digest: event.digest, expiresAt: event.expiresAt });
    for (const p of this.state.identities.values()) {
      if (p.kind !== "principal") continue;
      const asked = this.policy.decide({
        actor: { type: "Principal", name: p.name, groups: p.groups },
        action: "approval.decide",
        resource: { type: "Agent", name: agent.name, groups: agent.groups },
        principal: p.name,
        depth: 0,
        labels: event.labels,
        at: event.at,
      });
      if (asked.effect === "allow") this.nc.publish(subjects.approvalNotices(p.name), notice);
    }
  }

  private armApproval(id: EventId, expiresAt: number): void {
    const fire = (): void => {
      this.approvalTimers.delete(id);
      if (this.stopping || this.state.approvals.get(id)?.status !== "pending") return;
      if (this.deciding.has(id)) {
        // A human's decision is being written: look again once it is.
        this.armApproval(id, Date.now() + 500);
        return;
      }
      this.deciding.add(id);
      const eventId = newEventId();
      void this.appender
        .append(subjects.logApproval(this.state.approvals.get(id)?.actor ?? "kernel"), `kernel:expire.${id}`, () => ({
          v: EVENT_VERSION,
          id: eventId,
          at: Date.now(),
          type: EventType.ApprovalDecided,
          approval: id,
          verdict: "deny",
          by: "kernel",
          reason: "expired: no one decided in time",
        }))
        .then(() => this.opts.log.warn({ approval: id }, "held action expired (denied)"))
        .catch((err: unknown) => this.opts.log.error({ err: String(err), approval: id }, "could not record an approval's expiry"))
        .finally(() => this.deciding.delete(id));
    };
    const timer = setTimeout(fire, Math.max(0, expiresAt - Date.now()));
    timer.unref();
    this.approvalTimers.set(id, timer);
  }

  /** Records input that could not be accepted, and answers it with a typed error. */
  private async reject(msg: Msg, actor: string | undefined, error: MaxwellError): Promise<SyscallReply> {
    const wire: WireError = { code: error.code, message: error.message };
    this.opts.log.warn({ subject: msg.subject.slice(0, 200), actor, code: error.code, reason: error.message }, "syscall rejected");
    const subject = actor ? subjects.logDecision(actor) : subjects.logRejectedUnknown();
    const id = newEventId();
    await this.appender.append(subject, `rejected:${id}`, () => ({
      v: EVENT_VERSION,
      id,
      at: Date.now(),
      type: EventType.Rejected,
      ...(actor ? { actor } : {}),
      subject: msg.subject.slice(0, 256),
      size: msg.data.length,
      error: wire,
    }));
    return { ok: false, error: wire };
  }

  private onStored(event: LogEvent, subject: string, hash: string, data: Uint8Array, traceparent: string | undefined): void {
    evolve(this.state, event, hash);
    this.deliverer.stored(event.seq, subject, data, traceparent);
    // A checkpoint does not count: an idle kernel writes none.
    if (event.type !== EventType.Checkpoint) this.sinceCheckpoint += 1;
    if (event.type === EventType.Message && event.kind === "request" && event.deadline !== undefined) this.armTimeout(event.id, event.deadline);
    if (event.type === EventType.ApprovalRequested) {
      this.armApproval(event.id, event.expiresAt);
      this.notifyApprovers(event);
    }
    if (event.type === EventType.ApprovalDecided) {
      const t = this.approvalTimers.get(event.approval);
      if (t) {
        clearTimeout(t);
        this.approvalTimers.delete(event.approval);
      }
    }
    if (event.type === EventType.Reply) {
      const t = this.timers.get(event.inReplyTo);
      if (t) {
        clearTimeout(t);
        this.timers.delete(event.inReplyTo);
      }
    }
    if (this.sinceCheckpoint >= (this.opts.checkpointEvery ?? 1000) && !this.stopping) {
      this.sinceCheckpoint = 0;
      void this.checkpoint().catch((err: unknown) => this.opts.log.error({ err: String(err) }, "checkpoint failed"));
    }
  }

  private armTimeout(id: EventId, deadline: number): void {
    const fire = (): void => {
      this.timers.delete(id);
      if (this.answering.has(id) || this.stopping) return;
      const t = timeoutReply(this.state, id, Date.now(), newEventId, this.policy.policySet.hash);
      if (!t) return;
      this.answering.add(id);
      void this.appender
        .append(t.subject, t.msgId, () => t.event)
        .catch((err: unknown) => this.opts.log.error({ err: String(err), request: id }, "could not record a request timeout"))
        .finally(() => this.answering.delete(id));
    };
    const timer = setTimeout(fire, Math.max(0, deadline - Date.now()));
    timer.unref();
    this.timers.set(id, timer);
  }

  // ---------------------------------------------------------------- housekeeping

  /**
   * The first write to a forked log: hands the log over to this kernel's key and gives every
   * identity a credential minted by this kernel's account (the parent's credentials mean nothing
   * to this server). Killed identities get none: they stay killed.
   */
  private async takeOverFork(parentKey: string): Promise<void> {
    if (this.opts.dataDir === undefined) throw new MaxwellError(ErrorCode.BadRequest, "taking over a forked log needs a data directory to write the new credentials to");
    const layout = dataLayout(this.opts.dataDir);
    const identities: Record<string, string> = {};
    const creds = new Map<string, Uint8Array>();
    for (const identity of this.state.identities.values()) {
      if (identity.control === AgentState.Killed) continue;
      const minted = await mintUser(this.accountKp, identity.name, identity.kind === "agent" ? grantsFor.agent(identity.name) : grantsFor.principal(identity.name));
      identities[identity.name] = minted.publicKey;
      creds.set(identity.name, minted.creds);
      if (identity.kind === "agent") await ensureAgentConsumers(this.jsm, identity.name);
    }
    const upTo = this.state.head.seq;
    // Written first: should the append fail, the next start mints (and writes) them again.
    for (const [name, content] of creds) writeSecret(layout.credsOf(name), content);
    await this.appendKernel("fork", { type: EventType.Fork, upTo, parentKey, kernelKey: this.kernelPublicKey, identities });
    this.opts.log.warn({ upTo, parentKey, kernelKey: this.kernelPublicKey, identities: creds.size }, "took over a forked log");
  }

  private async appendKernel(what: "genesis" | "fork" | "policy" | "checkpoint" | "budget", fields: Record<string, unknown>, build?: (seq: number, prev: string) => Record<string, unknown>): Promise<LogEvent> {
    const id = newEventId();
    return this.appender.append(subjects.logKernel(what), `kernel:${id}`, (seq, prev) => ({
      v: EVENT_VERSION,
      id,
      at: Date.now(),
      ...fields,
      ...(build ? build(seq, prev) : {}),
    }) as PendingEvent);
  }

  private async loadPolicies(): Promise<void> {
    const file = this.opts.policyFile;
    if (!existsSync(file)) {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, this.opts.defaultPolicyText);
      this.opts.log.info({ file }, "wrote the default policy set");
    }
    const set = this.policy.load(readFileSync(file, "utf8"));
    if (set.hash !== this.state.policySet) {
      await this.appendKernel("policy", { type: EventType.PolicyLoaded, policySet: set.hash, policies: set.ids });
    }
    this.opts.log.info({ file, policies: set.ids, hash: set.hash.slice(0, 12) }, "policy set in force");
  }

  /** Appends a signed checkpoint of the chain head and saves it outside the log. */
  async checkpoint(): Promise<number> {
    this.sinceCheckpoint = 0;
    const key = this.kernelPublicKey;
    const stored = await this.appendKernel("checkpoint", { type: EventType.Checkpoint, key }, (seq, prev) => ({
      upTo: seq - 1,
      head: prev,
      sig: sign(this.kernelKp, checkpointMessage(seq - 1, prev)),
    }));
    if (stored.type === EventType.Checkpoint) {
      mkdirSync(dirname(this.opts.anchorFile), { recursive: true });
      writeFileSync(this.opts.anchorFile, JSON.stringify({ upTo: stored.upTo, head: stored.head, seq: stored.seq, key, at: stored.at }) + "\n");
      if (!this.stopping && this.state.head.seq - this.snapshotSeq >= this.snapshotInterval()) void this.saveSnapshot();
      return stored.upTo;
    }
    return 0;
  }

  // ---------------------------------------------------------------- snapshots

  private snapshotChecks(): SnapshotChecks {
    return {
      key: this.kernelPublicKey,
      verify: verifySignature,
      hashAt: async (seq) => {
        const m = await this.jsm.streams.getMessage(LOG_STREAM, { seq }).catch(() => null);
        return m ? entryHash(m.subject, m.data) : undefined;
      },
    };
  }

  /**
   * Events between snapshots. Encoding the state blocks the kernel for about 2.5 µs per
   * remembered syscall and delivery, so by default a big state is saved less often: never more
   * often than once per remembered entry, which keeps the cost under about 2.5 µs per event.
   */
  private snapshotInterval(): number {
    return this.opts.snapshotEvery ?? Math.max(SNAPSHOT_EVERY, this.state.syscalls.size + this.state.deliveries.size);
  }

  /**
   * A stored snapshot against the state folded from the start to its seq. One the kernel would
   * pass over (tampered bytes, another key) is reported as unusable, not as a different state.
   */
  private async checkSnapshot(seq: number, foldedDigest: string): Promise<SnapshotCheck> {
    const opened = this.snapshots ? await this.snapshots.opened(seq, this.snapshotChecks()) : { reason: "no snapshot store" };
    if ("reason" in opened) return { seq, identical: false, unusable: opened.reason };
    return { seq, identical: stateDigest(opened.state) === foldedDigest };
  }

  /**
   * Folds the log after `state.head` into `state`, up to `to` (0: the log's end), checking every
   * link of the chain from `prev`; `after(seq)` runs after each event. (Receiving and hashing on a
   * second thread was tried: on two cores, shared with nats-server, it was slower.)
   */
  private async fold(state: KernelState, prev: string, to: number, after: (seq: number) => void): Promise<void> {
    let expected = prev;
    let sinceYield = 0;
    for await (const entry of readLog(this.js, this.jsm, { fromSeq: state.head.seq + 1 })) {
      // Entries arrive in bursts of thousands; a kernel that is serving (replay state) lets its
      // syscalls in between rather than pausing them for the whole burst.
      if (++sinceYield >= FOLD_YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      if (to > 0 && entry.seq > to) break;
      const event = decodeMap(entry.data) as unknown as LogEvent;
      if (event.prev !== expected || event.seq !== entry.seq) throw new MaxwellError(ErrorCode.Conflict, `the log's hash chain is broken at seq ${entry.seq}`);
      expected = entryHash(entry.subject, entry.data);
      evolve(state, event, expected);
      after(entry.seq);
      if (to > 0 && entry.seq >= to) break;
    }
  }

  /** The newest snapshot that checks out against this log and key, or undefined (fold from the start). */
  private async loadSnapshot(): Promise<LoadedSnapshot | undefined> {
    if (this.opts.snapshotDir === undefined) return undefined;
    this.snapshots = SnapshotStore.open(this.opts.snapshotDir);
    const { loaded, skipped } = await this.snapshots.load(this.snapshotChecks());
    for (const s of skipped) this.opts.log.warn({ snapshot: s.seq, reason: s.reason }, "state snapshot passed over");
    return loaded;
  }

  /** Saves the state as it is at this moment; a failure is logged, never fatal (the log is the record). */
  private async saveSnapshot(): Promise<void> {
    if (!this.snapshots || this.snapshotting) return;
    this.snapshotting = true;
    const t0 = performance.now();
    try {
      const info = await this.snapshots.save(this.state, { key: this.kernelPublicKey, sign: (message) => sign(this.kernelKp, message) });
      this.snapshotSeq = info.seq;
      this.opts.log.info({ seq: info.seq, events: info.events, bytes: info.bytes, ms: Math.round(performance.now() - t0) }, "state snapshot saved");
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, "state snapshot failed");
    } finally {
      this.snapshotting = false;
    }
  }

  // ---------------------------------------------------------------- admin

  private async onAdmin(msg: Msg): Promise<void> {
    const op = msg.subject.split(".").pop();
    // The memory service reads the log (only) with its own inbox; everyone else is the admin CLI.
    const serviceRead = op === AdminOp.Read && msg.reply?.startsWith(`${subjects.inboxPrefix(serviceSubjects.identity(ServiceName.Memory))}.`);
    if (!msg.reply?.startsWith("_INBOX.") && !serviceRead) {
      // Same reason as for syscalls: answers go only to the admin's own inbox.
      this.opts.log.warn({ op, reply: msg.reply?.slice(0, 200) }, "admin request refused: reply subject is not an _INBOX subject");
      return;
    }
    let reply: AdminReply<unknown>;
    try {
      const body = msg.data.length > 0 ? decodeMap(msg.data) : {};
      switch (op) {
        case AdminOp.Register: {
          const run = this.adminWrites.then(() => this.register(body as unknown as RegisterRequest));
          this.adminWrites = run.catch(() => undefined);
          reply = { ok: true, result: await run };
          break;
        }
        case AdminOp.List:
          reply = { ok: true, result: [...this.state.identities.values()].map((i) => ({ ...i })) satisfies IdentitySummary[] };
          break;
        case AdminOp.Status:
          reply = { ok: true, result: this.status() };
          break;
        case AdminOp.PolicyTest:
          reply = { ok: true, result: await this.policyTest(body as unknown as PolicyTestRequest) };
          break;
        case AdminOp.PolicyApply: {
          const run = this.adminWrites.then(() => this.policyApply(body as unknown as { text: unknown }));
          this.adminWrites = run.catch(() => undefined);
          reply = { ok: true, result: await run };
          break;
        }
        case AdminOp.Control: {
          const run = this.adminWrites.then(() => this.control(body as unknown as ControlRequest));
          this.adminWrites = run.catch(() => undefined);
          reply = { ok: true, result: await run };
          break;
        }
        case AdminOp.Read:
          reply = { ok: true, result: await this.read(body as unknown as ReadRequest) };
          break;
        case AdminOp.Budget:
          reply = { ok: true, result: this.budgetReport() };
          break;
        case AdminOp.BudgetSet: {
          const run = this.adminWrites.then(() => this.budgetSet(body as unknown as BudgetSetRequest));
          this.adminWrites = run.catch(() => undefined);
          reply = { ok: true, result: await run };
          break;
        }
        case AdminOp.Approvals:
          reply = { ok: true, result: this.approvalList(body["all"] === true) };
          break;
        case AdminOp.ToolRegister: {
          const run = this.adminWrites.then(() => this.toolRegister(body as unknown as ToolRegisterRequest));
          this.adminWrites = run.catch(() => undefined);
          reply = { ok: true, result: await run };
          break;
        }
        case AdminOp.Tools:
          reply = { ok: true, result: this.toolList() };
          break;
        case AdminOp.Memory:
          reply = await this.memoryAdmin(body);
          break;
        case AdminOp.State:
          reply = { ok: true, result: await this.replayState(body["to"], body["full"]) };
          break;
        case AdminOp.Checkpoint:
          await this.appender.drain();
          reply = { ok: true, result: { upTo: await this.checkpoint() } };
          break;
        default:
          throw new MaxwellError(ErrorCode.BadRequest, `unknown admin operation '${String(op)}'`);
      }
    } catch (err) {
      const e = MaxwellError.from(err, ErrorCode.BadRequest);
      this.opts.log.warn({ op, code: e.code, reason: e.message }, "admin request failed");
      reply = { ok: false, error: e.toWire() };
    }
    if (msg.reply) msg.respond(encode(reply));
  }

  private budgetReport(): BudgetRow[] {
    const now = Date.now();
    return this.state.budgets.report().map(({ key, limits, usage }) => ({
      key,
      ...(limits ? { limits } : {}),
      used: {
        tokens: usage.tokens,
        microUsd: usage.microUsd,
        toolCalls: usage.toolCalls,
        open: usage.open,
        approvals: usage.approvals,
        messagesLastMinute: usage.sent.filter((t) => t > now - 60_000).length,
      },
      reserved: { ...usage.reserved },
    }));
  }

  /** An operator sets or clears a budget: logged, then in force. Agents cannot reach this. */
  private async budgetSet(req: BudgetSetRequest): Promise<{ seq: number }> {
    const scope: unknown = req.scope;
    if (scope !== "principal" && scope !== "agent" && scope !== "trace") throw new MaxwellError(ErrorCode.BadRequest, `scope must be principal, agent or trace, not ${JSON.stringify(scope)}`);
    const name = scope === "trace" ? "*" : req.name;
    if (scope !== "trace") {
      if (!isName(name)) throw new MaxwellError(ErrorCode.BadRequest, `budget needs the ${scope}'s name`);
      const who = this.state.identities.get(name);
      if (!who || who.kind !== scope) throw new MaxwellError(ErrorCode.NotFound, `no ${scope} named '${name}' is registered`);
    }
    const limits: Record<string, number> = {};
    const given = (req.limits ?? {}) as Record<string, unknown>;
    for (const [k, v] of Object.entries(given)) {
      if (!BUDGET_FIELDS.includes(k)) throw new MaxwellError(ErrorCode.BadRequest, `unknown budget limit '${k}' (known: ${BUDGET_FIELDS.join(", ")})`);
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new MaxwellError(ErrorCode.BadRequest, `budget limit '${k}' must be a whole number >= 0`);
      limits[k] = v;
    }
    const stored = await this.appendKernel("budget", { type: EventType.BudgetSet, scope, name, limits });
    this.opts.log.info({ scope, name, limits }, Object.keys(limits).length ? "budget set" : "budget cleared");
    return { seq: stored.seq };
  }

  private approvalList(all: boolean): ApprovalSummary[] {
    const out: ApprovalSummary[] = [];
    for (const a of this.state.approvals.values()) {
      if (!all && a.status !== "pending") continue;
      const row: ApprovalSummary = { id: a.id, actor: a.actor, principal: a.principal, op: a.op, body: a.request.body ?? null, digest: a.digest, reason: a.reason, labels: a.labels, at: a.at, expiresAt: a.expiresAt, status: a.status };
      if (a.request.to !== undefined) row.to = a.request.to;
      if (a.decidedBy !== undefined) row.decidedBy = a.decidedBy;
      out.push(row);
    }
    return out;
  }

  private toolList(): ToolSummary[] {
    return [...this.state.tools.values()].map(({ manifest, hash, groups }) => ({
      name: manifest.name,
      version: manifest.version,
      effect: manifest.effect,
      hash,
      service: manifest.service ?? ServiceName.Tools,
      groups,
      description: manifest.description,
    }));
  }

  /**
   * Pins tool manifests. A manifest seen for the first time is pinned; one whose hash changed
   * since it was pinned is refused (the tool service refuses calls too) until an operator
   * re-approves it with `approve`.
   */
  private async toolRegister(req: ToolRegisterRequest): Promise<ToolRegisterResult> {
    const groups: unknown = req.groups ?? [];
    if (!Array.isArray(groups) || !groups.every(isName)) throw new MaxwellError(ErrorCode.BadRequest, "groups must be a list of valid names");
    let manifests: ToolManifest[];
    if (req.manifest !== undefined) manifests = [validateManifest(req.manifest)];
    else if (typeof req.service === "string" && isName(req.service)) {
      const raw = await requestRaw(this.nc, serviceSubjects.call(req.service, "manifests"), encode({}), { timeoutMs: 10_000 });
      const reply = decodeMap(raw) as unknown as ServiceReply;
      if (!reply.ok) throw MaxwellError.fromWire(reply.error);
      if (!Array.isArray(reply.result)) throw new MaxwellError(ErrorCode.Internal, `the ${req.service} service did not list manifests`);
      manifests = reply.result.map((m) => validateManifest({ service: req.service, ...(m as object) }));
    } else throw new MaxwellError(ErrorCode.BadRequest, "tool-register needs 'manifest' or 'service'");
    const result: ToolRegisterResult = { tools: [] };
    for (const manifest of manifests) {
      const hash = manifestHash(manifest);
      const pinned = this.state.tools.get(manifest.name);
      const row = { name: manifest.name, version: manifest.version, effect: manifest.effect, hash };
      if (pinned?.hash === hash && (req.groups === undefined || pinned.groups.join(",") === (groups as string[]).join(","))) {
        result.tools.push({ ...row, status: "unchanged" });
        continue;
      }
      if (pinned && pinned.hash !== hash && !req.approve) {
        this.opts.log.warn({ tool: manifest.name, pinned: pinned.hash.slice(0, 12), offered: hash.slice(0, 12) }, "tool manifest changed since it was pinned: refused until re-approved");
        result.tools.push({ ...row, status: "changed-refused" });
        continue;
      }
      const id = newEventId();
      await this.appender.append(subjects.logTool(manifest.name), `tool:${manifest.name}:${hash}:${id}`, () => ({
        v: EVENT_VERSION,
        id,
        at: Date.now(),
        type: EventType.ToolRegistered,
        manifest,
        hash,
        ...((groups as string[]).length > 0 || pinned ? { groups: req.groups === undefined && pinned ? pinned.groups : (groups as string[]) } : {}),
      }));
      this.policy.invalidate();
      this.opts.log.info({ tool: manifest.name, version: manifest.version, effect: manifest.effect, hash: hash.slice(0, 12) }, pinned ? "tool re-approved" : "tool pinned");
      result.tools.push({ ...row, status: pinned ? "re-approved" : "pinned" });
    }
    return result;
  }

  /**
   * State replay: folds the log into a fresh state, as a restarted kernel would, and compares its
   * digest with the live state's at the same seq. With `to`, folds only that far and shows the
   * state as of then (time travel without re-running anything).
   */
  private async replayState(to: unknown, full: unknown): Promise<StateReplayResult> {
    if (to !== undefined && (typeof to !== "number" || !Number.isInteger(to) || to < 1)) throw new MaxwellError(ErrorCode.BadRequest, "'to' must be a sequence number >= 1");
    // The live digest is taken synchronously, so it is the state at exactly this head.
    const live = to === undefined ? { seq: this.state.head.seq, digest: stateDigest(this.state) } : undefined;
    const upTo = to ?? (live as { seq: number }).seq;
    let replayed = initialState();
    let expectedPrev = GENESIS_PREV;
    let start: SnapshotInfo | undefined;
    // Time travel may start from the nearest snapshot; the comparison with the live state never
    // does: it folds from the start and checks every snapshot it passes on the way.
    const stored = this.snapshots?.list() ?? [];
    if (to !== undefined && full !== true && this.snapshots) {
      const { loaded } = await this.snapshots.load(this.snapshotChecks(), upTo);
      if (loaded) {
        replayed = loaded.state;
        expectedPrev = loaded.info.hash;
        start = loaded.info;
      }
    }
    const checks = new Set(stored.filter((s) => s.seq > replayed.head.seq && s.seq <= upTo).map((s) => s.seq));
    // The fold's digest where a snapshot was taken; the snapshots are opened and compared after.
    const foldedAt = new Map<number, string>();
    const t0 = performance.now();
    const from = replayed.head.seq;
    if (from < upTo) {
      const state = replayed;
      await this.fold(state, expectedPrev, upTo, (seq) => {
        if (checks.has(seq)) foldedAt.set(seq, stateDigest(state));
      });
    }
    const folded = replayed.head.seq - from;
    const ms = performance.now() - t0;
    const snapshots: SnapshotCheck[] = [];
    for (const [seq, digest] of foldedAt) snapshots.push(await this.checkSnapshot(seq, digest));
    const result: StateReplayResult = {
      seq: replayed.head.seq,
      events: replayed.events,
      folded,
      ms: Math.round(ms),
      eventsPerSec: Math.round(folded / Math.max(ms / 1000, 1e-6)),
      replayed: stateDigest(replayed),
      summary: stateSummary(replayed),
      snapshots,
    };
    if (start) result.fromSnapshot = start.seq;
    if (live) {
      result.live = live.digest;
      result.identical = live.digest === result.replayed && live.seq === replayed.head.seq && snapshots.every((c) => c.identical || c.unusable !== undefined);
    }
    return result;
  }

  /** Memory for people: erasure is the kernel's (it holds the keys); the rest goes to the memory service. */
  private async memoryAdmin(body: Record<string, unknown>): Promise<AdminReply<unknown>> {
    if (body["op"] === "import") {
      const run = this.adminWrites.then(() => this.effects.importNamespace(String(body["namespace"]), body["lines"], this.policy.policySet.hash));
      this.adminWrites = run.catch(() => undefined);
      return { ok: true, result: await run };
    }
    if (body["op"] === "erase") {
      const record = body["key"];
      const run = this.adminWrites.then(() =>
        record === undefined ? this.effects.eraseNamespace(String(body["namespace"]), this.policy.policySet.hash) : this.effects.eraseRecord(String(body["namespace"]), String(record), this.policy.policySet.hash),
      );
      this.adminWrites = run.catch(() => undefined);
      return { ok: true, result: await run };
    }
    const call = { effect: newEventId(), seq: this.state.head.seq, at: Date.now(), op: "admin", actor: "admin", principal: "admin", trace: newTraceId(), target: "", args: body, labels: [], deadline: Date.now() + 30_000 };
    const raw = await requestRaw(this.nc, serviceSubjects.call(ServiceName.Memory, "admin"), encode(call), { timeoutMs: 30_000 }).catch((err: unknown) => {
      throw new MaxwellError(ErrorCode.Unavailable, `the memory service did not answer (${(err as Error).message}); is it running?`);
    });
    const reply = decodeMap(raw) as unknown as ServiceReply;
    return reply.ok ? { ok: true, result: reply.result } : { ok: false, error: reply.error };
  }

  /** What-if: the recorded decisions re-evaluated under a candidate set. The live set is untouched. */
  private async policyTest(req: PolicyTestRequest): Promise<PolicyTestResult> {
    if (typeof req.text !== "string") throw new MaxwellError(ErrorCode.BadRequest, "policy-test needs 'text': the candidate policy set");
    const since = req.since === undefined ? 0 : Number(req.since);
    if (!Number.isInteger(since) || since < 0) throw new MaxwellError(ErrorCode.BadRequest, "'since' must be a sequence number >= 0");
    const candidate = new PolicyEngine();
    candidate.load(req.text);
    const events: LogEvent[] = [];
    for await (const entry of readLog(this.js, this.jsm, { fromSeq: 1 })) events.push(decodeMap(entry.data) as unknown as LogEvent);
    return whatIf(events, candidate, since);
  }

  /** Installs a validated policy set: the file, the live engine, and a policy.loaded event. */
  private async policyApply(req: { text: unknown }): Promise<PolicyApplyResult> {
    if (typeof req.text !== "string") throw new MaxwellError(ErrorCode.BadRequest, "policy-apply needs 'text': the policy set");
    // Validate on a scratch engine: a refused set changes nothing, and the old one stays in force.
    const set = new PolicyEngine().load(req.text);
    if (set.hash === this.state.policySet) return { policySet: set.hash, policies: set.ids, seq: 0 };
    // Log before effect: the change is recorded before any decision is made under it.
    const stored = await this.appendKernel("policy", { type: EventType.PolicyLoaded, policySet: set.hash, policies: set.ids });
    this.policy.load(req.text);
    writeFileSync(this.opts.policyFile, req.text);
    this.opts.log.info({ policies: set.ids, hash: set.hash.slice(0, 12) }, "policy set applied");
    return { policySet: set.hash, policies: set.ids, seq: stored.seq };
  }

  /** An operator pauses, resumes, quarantines or releases an agent: logged, then in force. */
  private async control(req: ControlRequest): Promise<ControlResult> {
    const agent: unknown = req.agent;
    const state: unknown = req.state;
    if (!isName(agent) || this.state.identities.get(agent)?.kind !== "agent") {
      throw new MaxwellError(ErrorCode.NotFound, `no agent named ${JSON.stringify(agent)} is registered`);
    }
    if (state !== AgentState.Running && state !== AgentState.Paused && state !== AgentState.Quarantined && state !== AgentState.Killed) {
      throw new MaxwellError(ErrorCode.BadRequest, `state must be one of running, paused, quarantined, killed, not ${JSON.stringify(state)}`);
    }
    const reason = typeof req.reason === "string" ? req.reason.slice(0, 500) : undefined;
    const identity = this.state.identities.get(agent);
    const was = identity?.control ?? AgentState.Running;
    if (was === AgentState.Killed) throw new MaxwellError(ErrorCode.Conflict, `agent '${agent}' was killed; a killed agent stays killed (register a new one)`);
    if (state === AgentState.Killed && !this.canRevoke()) {
      throw new MaxwellError(ErrorCode.Unavailable, "this kernel has no operator and system keys, so it cannot revoke a credential; kill is refused");
    }
    const id = newEventId();
    const stored = await this.appender.append(subjects.logControl(agent), `control:${id}`, () => ({
      v: EVENT_VERSION,
      id,
      at: Date.now(),
      type: EventType.AgentControlled,
      agent,
      state,
      ...(reason ? { reason } : {}),
      ...(state === AgentState.Killed && identity ? { publicKey: identity.publicKey } : {}),
    }));
    this.deliverer.setPaused(agent, state === AgentState.Paused || state === AgentState.Killed);
    if (state === AgentState.Killed) {
      await this.pushRevocations();
      // Whoever waits on it is told now, not at their deadline.
      for (const [requestId] of this.state.pending) {
        if (this.state.deliveries.get(requestId)?.to !== agent || this.answering.has(requestId)) continue;
        const failed = timeoutReply(this.state, requestId, Date.now(), newEventId, this.policy.policySet.hash, "killed");
        if (failed) await this.appender.append(failed.subject, failed.msgId, () => failed.event);
      }
    }
    this.opts.log.info({ agent, was, state, reason }, "agent control");
    return { agent, was, state, seq: stored.seq };
  }

  private canRevoke(): boolean {
    return Boolean(this.opts.operatorKey && this.opts.systemKey && existsSync(this.opts.operatorKey) && existsSync(this.opts.systemKey));
  }

  /** Killed agents' credentials, revoked as of the moment they were killed (unix seconds). */
  private revocations(): Map<string, number> {
    const out = new Map<string, number>();
    for (const i of this.state.identities.values()) {
      if (i.control === AgentState.Killed) out.set(i.publicKey, Math.ceil((i.killedAt ?? Date.now()) / 1000));
    }
    return out;
  }

  /**
   * Re-signs the account with every revocation and pushes it to the server, which drops the
   * revoked connections at once and refuses them from then on. Also saved for the server config.
   */
  private async pushRevocations(): Promise<void> {
    if (!this.canRevoke()) {
      this.opts.log.error("killed agents exist but this kernel has no operator and system keys: their credentials are not revoked at the server");
      return;
    }
    const revocations = Object.fromEntries(this.revocations());
    if (this.opts.revocationsFile) {
      mkdirSync(dirname(this.opts.revocationsFile), { recursive: true });
      writeFileSync(this.opts.revocationsFile, JSON.stringify(revocations, null, 2) + "\n");
    }
    const authority = { operator: loadKey(this.opts.operatorKey as string), account: this.accountKp };
    const accountJwt = await maxwellAccountJwt(authority, revocations);
    const sys = await connectNats({ servers: this.opts.servers, creds: await systemCreds({ system: loadKey(this.opts.systemKey as string) }), name: "maxwell-kernel-sys", reconnect: false });
    try {
      const answer = decodeJson(await requestRaw(sys, claimsUpdateSubject(this.accountKp.getPublicKey()), new TextEncoder().encode(accountJwt), { timeoutMs: 5000 }));
      const code = (answer["data"] as { code?: number } | undefined)?.code;
      if (code !== 200) throw new MaxwellError(ErrorCode.Internal, `the server did not take the revocation: ${JSON.stringify(answer).slice(0, 300)}`);
      this.opts.log.info({ revoked: Object.keys(revocations).length }, "revocations in force at the server");
    } finally {
      await sys.close();
    }
  }

  /** Raw entries for the admin CLI, capped so an answer fits in one NATS message. */
  private async read(req: ReadRequest): Promise<ReadResult> {
    if (req.seqs !== undefined) return this.readAt(req.seqs);
    const from = Number(req.from);
    const max = Math.min(Number(req.max ?? 1000), 5000);
    if (!Number.isInteger(from) || from < 1 || !Number.isInteger(max) || max < 1) {
      throw new MaxwellError(ErrorCode.BadRequest, "read needs an integer 'from' >= 1 and 'max' >= 1");
    }
    const info = await this.jsm.streams.info(LOG_STREAM);
    const entries: ReadResult["entries"] = [];
    let bytes = 0;
    if (from <= info.state.last_seq) {
      for await (const e of readLog(this.js, this.jsm, { fromSeq: from })) {
        entries.push({ seq: e.seq, subject: e.subject, data: e.data });
        bytes += e.data.length + e.subject.length + 16;
        if (entries.length >= max || bytes > 512 * 1024) break;
      }
    }
    return { entries, lastSeq: info.state.last_seq };
  }

  /** Entries at scattered sequences (one trace's, found through the log index): direct gets. */
  private async readAt(seqs: unknown): Promise<ReadResult> {
    if (!Array.isArray(seqs) || seqs.length > READ_SEQS_MAX || !seqs.every((s) => Number.isInteger(s) && (s as number) >= 1)) {
      throw new MaxwellError(ErrorCode.BadRequest, `read by 'seqs' takes a list of at most ${READ_SEQS_MAX} sequences (integers >= 1)`);
    }
    const wanted = [...new Set(seqs as number[])].sort((a, b) => a - b);
    const [info, found] = await Promise.all([this.jsm.streams.info(LOG_STREAM), readEntriesAt(this.jsm, wanted)]);
    const entries: ReadResult["entries"] = [];
    let bytes = 0;
    let settled = wanted.length;
    for (const e of found) {
      bytes += e.data.length + e.subject.length + 16;
      if (bytes > 512 * 1024 && entries.length > 0) {
        settled = wanted.indexOf(e.seq);
        break;
      }
      entries.push(e);
    }
    return { entries, lastSeq: info.state.last_seq, settled };
  }

  private status(): KernelStatus {
    return {
      seq: this.state.head.seq,
      events: this.state.events,
      identities: this.state.identities.size,
      policySet: this.policy.policySet.hash,
      policies: this.policy.policySet.ids,
      lastCheckpoint: this.state.lastCheckpoint,
      pendingRequests: this.state.pending.size,
      uptimeMs: Date.now() - this.startedAt,
      kernelKey: this.kernelPublicKey,
    };
  }

  private async register(req: RegisterRequest): Promise<RegisterResult> {
    const name: unknown = req.name;
    const kind: unknown = req.kind;
    if (!isName(name)) throw new MaxwellError(ErrorCode.BadRequest, `invalid name ${JSON.stringify(name)}: use 1-64 characters from a-z, 0-9, '-', '_', starting with a letter`);
    if (RESERVED_NAMES.has(name)) throw new MaxwellError(ErrorCode.BadRequest, `'${name}' is reserved for the kernel`);
    if (name.startsWith("svc-")) throw new MaxwellError(ErrorCode.BadRequest, `'${name}': names starting with 'svc-' are reserved for the services behind the kernel`);
    if (kind !== "agent" && kind !== "principal") throw new MaxwellError(ErrorCode.BadRequest, `kind must be 'agent' or 'principal', not ${JSON.stringify(kind)}`);
    const groups: unknown = req.groups ?? [];
    if (!Array.isArray(groups) || !groups.every(isName)) throw new MaxwellError(ErrorCode.BadRequest, "groups must be a list of valid names");
    if (this.state.identities.has(name)) throw new MaxwellError(ErrorCode.Conflict, `'${name}' is already registered (as ${this.state.identities.get(name)?.kind})`);
    const minted = await mintUser(this.accountKp, name, kind === "agent" ? grantsFor.agent(name) : grantsFor.principal(name));
    if (kind === "agent") await ensureAgentConsumers(this.jsm, name);
    const id = newEventId();
    const stored = await this.appender.append(subjects.logIdentity(name), `id:${name}`, () => ({
      v: EVENT_VERSION,
      id,
      at: Date.now(),
      type: EventType.IdentityRegistered,
      name,
      kind: kind as IdentityKind,
      groups: groups as string[],
      publicKey: minted.publicKey,
    }));
    this.policy.invalidate();
    if (kind === "agent") await this.deliverer.add(name);
    this.opts.log.info({ name, kind, groups }, "identity registered");
    return { name, kind: kind as IdentityKind, groups: groups as string[], publicKey: minted.publicKey, creds: new TextDecoder().decode(minted.creds), seq: stored.seq };
  }
}
