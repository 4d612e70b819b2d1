/**
 * Runs an agent: connects with its own credential, pulls its deliveries from its durable
 * consumers, runs the handler, and acknowledges a delivery only after the handler (and every
 * syscall it made) finished. Unacked work is redelivered after a crash; duplicates are dropped by
 * event id, and syscall ids are deterministic per (delivery, step), so a re-run handler's effects
 * are answered from the log instead of repeated.
 */
import {
  ErrorCode,
  EventType,
  Header,
  MaxwellError,
  SyscallOp,
  assertName,
  decodeMap,
  encode,
  newScope,
  subjects,
  syscallId,
  type AckRequest,
  type EventId,
  type LogEvent,
  type MessageEvent,
  type Observation,
  type ReplyEvent,
  type SyscallRequest,
  type TraceId,
} from "../protocol/mod.js";
import { connectNats, type NatsConnection, type Subscription } from "../transport/connection.js";
import { createLogger, type Logger } from "../runtime/logger.js";
import { messageOf, type AgentContext, type AgentDefinition, type EffectResult, type LlmResponse, type Message, type RequestOptions, type SendOptions, type SendResult } from "./agent.js";
import { SyscallClient } from "./syscalls.js";

export interface RunOptions {
  /** NATS URL; default MAXWELL_NATS_URL. */
  servers?: string;
  /** Creds file path or content; default MAXWELL_CREDS. */
  creds?: string | Uint8Array;
  name?: string;
  log?: Logger;
  /** How long a syscall keeps retrying while the kernel is unavailable (default 60 s). */
  retryForMs?: number;
}

export interface RunningAgent {
  readonly name: string;
  /** Stops taking deliveries, lets running handlers finish and ack, then disconnects. */
  stop(): Promise<void>;
  /** Resolves when the agent's connection closes. */
  closed(): Promise<void>;
}

const LOCAL_GRACE_MS = 10_000;
const REMEMBERED = 10_000;
/** Sequences per ack message at most (schemas/ack.json allows 4096 per list). */
const ACK_BATCH = 1024;

/** Runs `def` until stopped. */
export async function runAgent(def: AgentDefinition, opts: RunOptions = {}): Promise<RunningAgent> {
  const name = opts.name ?? def.name ?? process.env["MAXWELL_AGENT"];
  assertName(name, "agent name");
  const servers = opts.servers ?? process.env["MAXWELL_NATS_URL"];
  const creds = opts.creds ?? process.env["MAXWELL_CREDS"];
  if (!servers) throw new MaxwellError(ErrorCode.BadRequest, "no NATS URL: pass servers or set MAXWELL_NATS_URL");
  if (!creds) throw new MaxwellError(ErrorCode.BadRequest, "no credential: pass creds or set MAXWELL_CREDS");
  const log = opts.log ?? createLogger(`agent:${name}`);
  const nc = await connectNats({ servers, creds, name: `agent:${name}`, inboxPrefix: subjects.inboxPrefix(name) });
  const runtime = new AgentRuntime(def, name, nc, log, opts.retryForMs);
  await runtime.start();
  return {
    name,
    stop: () => runtime.stop(),
    closed: async () => {
      await nc.closed();
    },
  };
}

interface PendingRequest {
  resolve: (reply: ReplyEvent) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

class AgentRuntime {
  private readonly syscalls: SyscallClient;
  private deliveries: Subscription | undefined;
  /** Acks and naks not sent yet: they go out together, one message per event-loop turn. */
  private acks: number[] = [];
  private naks: number[] = [];
  private ackTimer: NodeJS.Immediate | undefined;
  /** Messages waiting for a free handler slot, in delivery order. */
  private readonly queue: Array<{ event: MessageEvent; redelivered: boolean }> = [];
  private readonly seen = new Set<EventId>();
  private workingTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Map<EventId, PendingRequest>();
  private readonly early = new Map<EventId, ReplyEvent>();
  private readonly done = new Set<EventId>();
  private readonly active = new Set<EventId>();
  private readonly running = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly activeSeqs = new Map<EventId, number>();
  private stopping = false;

  constructor(
    private readonly def: AgentDefinition,
    private readonly name: string,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    retryForMs?: number,
  ) {
    this.syscalls = new SyscallClient(nc, name, retryForMs !== undefined ? { retryForMs } : {});
    this.concurrency = Math.max(1, def.concurrency ?? 1);
  }

  async start(): Promise<void> {
    this.deliveries = this.nc.subscribe(subjects.delivery(this.name), {
      callback: (err, m) => {
        if (err) this.log.error({ err: err.message }, "delivery subscription failed");
        else this.onDelivery(m.data, m.headers?.has(Header.Redelivered) ?? false);
      },
    });
    await this.nc.flush();
    if (this.def.onStart) {
      const ctx = new HandlerContext(this, undefined, newScope());
      await this.def.onStart(ctx);
      await ctx.flush();
    }
    // Ask the kernel for everything it holds unacknowledged for us (work from before a restart).
    this.sendAck({ resend: true });
    this.workingTimer = setInterval(() => {
      if (this.activeSeqs.size > 0) this.sendAck({ working: [...this.activeSeqs.values()] });
    }, 3_000);
    this.workingTimer.unref();
    this.log.info({ concurrency: this.concurrency }, "agent running");
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // Queued messages stay unacknowledged: the kernel delivers them again when we are back.
    this.queue.length = 0;
    // Handlers finish, except those waiting for a human's decision (that can take minutes): the
    // agent stops without them, as after a crash. Their deliveries stay unacknowledged and come
    // back when it restarts, and the held call, asked again with the same id, is still held.
    await Promise.race([Promise.allSettled([...this.running]), this.untilOnlyHumansAwaited()]);
    this.syscalls.abandonHeldCalls();
    if (this.workingTimer) clearInterval(this.workingTimer);
    this.deliveries?.unsubscribe();
    this.flushAcks();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new MaxwellError(ErrorCode.Unavailable, "agent is stopping"));
    }
    await this.nc.drain().catch(() => undefined);
    this.log.info("agent stopped");
  }

  /** Resolves once every handler still running is waiting for a human (checked every 50 ms). */
  private async untilOnlyHumansAwaited(): Promise<void> {
    while (this.running.size > this.syscalls.waitingForHumans) await new Promise((r) => setTimeout(r, 50));
  }

  // -------------------------------------------------------------- deliveries

  private sendAck(req: AckRequest): void {
    if (this.nc.isClosed()) return;
    this.nc.publish(subjects.syscall(this.name, SyscallOp.Ack), encode(req));
  }

  /** Queues an ack (or nak); everything queued in one event-loop turn goes out as one message. */
  private settleDelivery(seq: number, outcome: "ack" | "nak"): void {
    (outcome === "ack" ? this.acks : this.naks).push(seq);
    if (this.acks.length >= ACK_BATCH || this.naks.length >= ACK_BATCH) this.flushAcks();
    else this.ackTimer ??= setImmediate(() => this.flushAcks());
  }

  private flushAcks(): void {
    if (this.ackTimer) clearImmediate(this.ackTimer);
    this.ackTimer = undefined;
    if (this.acks.length === 0 && this.naks.length === 0) return;
    const req: AckRequest = {};
    if (this.acks.length > 0) req.ack = this.acks;
    if (this.naks.length > 0) req.nak = this.naks;
    this.acks = [];
    this.naks = [];
    this.sendAck(req);
  }

  private onDelivery(data: Uint8Array, redelivered: boolean): void {
    let event: LogEvent;
    try {
      event = decodeMap(data) as unknown as LogEvent;
    } catch (err) {
      this.log.error({ err: String(err) }, "undecodable delivery; ignoring it");
      return;
    }
    if (event.type === EventType.Reply) this.onReply(event);
    else if (event.type === EventType.Message && event.to === this.name) this.onMessage(event, redelivered);
    else this.log.error({ seq: event.seq, type: event.type }, "unexpected delivery; ignoring it");
  }

  private onReply(event: ReplyEvent): void {
    const waiter = this.pending.get(event.inReplyTo);
    if (waiter) {
      this.pending.delete(event.inReplyTo);
      clearTimeout(waiter.timer);
      waiter.resolve(event);
    } else {
      // The request's syscall answer may still be on its way: keep the reply for it.
      this.early.set(event.inReplyTo, event);
      if (this.early.size > REMEMBERED) this.early.delete(this.early.keys().next().value as EventId);
    }
    this.settleDelivery(event.seq, "ack");
  }

  private onMessage(event: MessageEvent, redelivered: boolean): void {
    if (this.done.has(event.id)) {
      this.settleDelivery(event.seq, "ack");
      return;
    }
    if (this.seen.has(event.id)) return; // queued or running: that run acks
    this.seen.add(event.id);
    this.queue.push({ event, redelivered });
    this.drainQueue();
  }

  private drainQueue(): void {
    while (!this.stopping && this.running.size < this.concurrency && this.queue.length > 0) {
      const next = this.queue.shift() as { event: MessageEvent; redelivered: boolean };
      const run = this.deliver(next.event, next.redelivered).finally(() => {
        this.running.delete(run);
        this.seen.delete(next.event.id);
        this.drainQueue();
      });
      this.running.add(run);
    }
  }

  private async deliver(event: MessageEvent, redelivered: boolean): Promise<void> {
    this.activeSeqs.set(event.id, event.seq);
    const message = messageOf(event, redelivered);
    const ctx = new HandlerContext(this, message, event.id);
    try {
      let result: unknown;
      let failure: unknown;
      try {
        result = await this.def.onMessage(message, ctx);
      } catch (err) {
        failure = err;
      }
      if (failure !== undefined) {
        const e = MaxwellError.from(failure);
        if (e.code === ErrorCode.Unavailable) {
          // The kernel could not be reached: leave the delivery to be tried again.
          this.log.warn({ event: event.id, err: e.message }, "handler could not reach the kernel; will retry the delivery");
          this.settleDelivery(event.seq, "nak");
          return;
        }
        this.log.warn({ event: event.id, code: e.code, err: e.message }, "handler failed");
        if (message.kind === "request" && !ctx.replied) await ctx.replyError(e);
      } else if (message.kind === "request" && !ctx.replied) {
        await ctx.reply(result === undefined ? null : result);
      }
      await ctx.flush();
      this.settleDelivery(event.seq, "ack");
      this.done.add(event.id);
      if (this.done.size > REMEMBERED) this.done.delete(this.done.keys().next().value as EventId);
    } catch (err) {
      this.log.error({ event: event.id, err: String(err) }, "could not finish the delivery; it will be redelivered");
      this.settleDelivery(event.seq, "nak");
    } finally {
      this.activeSeqs.delete(event.id);
    }
  }

  // -------------------------------------------------------------- syscalls

  call(op: SyscallOp, request: SyscallRequest, trace?: TraceId) {
    return this.syscalls.call(op, request, trace);
  }

  awaitReply(requestId: EventId, timeoutMs: number): Promise<ReplyEvent> {
    const early = this.early.get(requestId);
    if (early) {
      this.early.delete(requestId);
      return Promise.resolve(early);
    }
    return new Promise<ReplyEvent>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new MaxwellError(ErrorCode.Timeout, `no reply to request ${requestId}, and no timeout from the kernel either (is it running?)`));
      }, timeoutMs + LOCAL_GRACE_MS);
      this.pending.set(requestId, { resolve, reject, timer });
    });
  }

  get agentName(): string {
    return this.name;
  }
  get logger(): Logger {
    return this.log;
  }
}

/** The context of one handler run: numbers its syscalls and collects its observations. */
class HandlerContext implements AgentContext {
  private step = 0;
  private observed: Observation[] = [];
  replied = false;

  constructor(
    private readonly rt: AgentRuntime,
    readonly message: Message | undefined,
    private readonly scope: string,
  ) {}

  get name(): string {
    return this.rt.agentName;
  }
  get log(): Logger {
    return this.rt.logger;
  }

  private next(extra: Omit<SyscallRequest, "id" | "causation" | "observed">): SyscallRequest {
    const req: SyscallRequest = { id: syscallId(this.scope, this.step++), ...extra };
    if (this.message) req.causation = this.message.id;
    if (this.observed.length > 0) {
      req.observed = this.observed;
      this.observed = [];
    }
    return req;
  }

  async send(to: string, body: unknown, opts: SendOptions = {}): Promise<SendResult> {
    const r = await this.rt.call(SyscallOp.Send, this.next({ to, body, ...(opts.scope ? { scope: opts.scope } : {}), ...(opts.labels ? { labels: opts.labels } : {}) }), this.message?.trace);
    return { event: r.event, seq: r.seq };
  }

  async request<R = unknown>(to: string, body: unknown, opts: RequestOptions = {}): Promise<R> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const r = await this.rt.call(SyscallOp.Request, this.next({ to, body, timeoutMs, ...(opts.scope ? { scope: opts.scope } : {}), ...(opts.labels ? { labels: opts.labels } : {}) }), this.message?.trace);
    const reply = r.reply ?? (await this.rt.awaitReply(r.event, timeoutMs));
    if (reply.error) throw MaxwellError.fromWire(reply.error);
    return reply.body as R;
  }

  async reply(body: unknown): Promise<void> {
    const inReplyTo = this.requestId();
    this.replied = true;
    await this.rt.call(SyscallOp.Reply, this.next({ inReplyTo, body }), this.message?.trace);
  }

  async replyError(error: MaxwellError): Promise<void> {
    const inReplyTo = this.requestId();
    this.replied = true;
    await this.rt.call(SyscallOp.Reply, this.next({ inReplyTo, error: { code: error.code, message: error.message } }), this.message?.trace);
  }

  async llm(params: { model: string; max_tokens: number; messages: unknown[]; [key: string]: unknown }): Promise<LlmResponse> {
    const { model, ...rest } = params;
    const r = await this.rt.call(SyscallOp.Llm, this.next({ to: model, body: rest }), this.message?.trace);
    const effect = r.effect ?? { labels: [] };
    const out: LlmResponse = { message: effect.result as LlmResponse["message"], labels: effect.labels };
    if (effect.usage) out.usage = effect.usage;
    return out;
  }

  async tool<T = unknown>(name: string, args: Record<string, unknown>): Promise<EffectResult<T>> {
    const r = await this.rt.call(SyscallOp.Tool, this.next({ to: name, body: args }), this.message?.trace);
    return { result: r.effect?.result as T, labels: r.effect?.labels ?? [] };
  }

  async memory<T = unknown>(namespace: string, op: string, args: Record<string, unknown> = {}): Promise<EffectResult<T>> {
    const r = await this.rt.call(SyscallOp.Mem, this.next({ to: namespace, body: { ...args, op } }), this.message?.trace);
    return { result: r.effect?.result as T, labels: r.effect?.labels ?? [] };
  }

  now(): number {
    const value = Date.now();
    this.observed.push({ kind: "now", value });
    return value;
  }

  random(): number {
    const value = Math.random();
    this.observed.push({ kind: "random", value });
    return value;
  }

  /** Records observations not yet carried by a syscall. Called before the delivery is acked. */
  async flush(): Promise<void> {
    if (this.observed.length === 0) return;
    await this.rt.call(SyscallOp.Record, this.next({}), this.message?.trace);
  }

  private requestId(): EventId {
    if (!this.message || this.message.kind !== "request") {
      throw new MaxwellError(ErrorCode.BadRequest, "reply is only possible while handling a request");
    }
    if (this.replied) throw new MaxwellError(ErrorCode.Conflict, "this request was already answered");
    return this.message.id;
  }
}
