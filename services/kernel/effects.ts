/**
 * Carrying out effects: the kernel's side of model calls, tool calls and memory operations. An
 * allowed effect is recorded (`effect.started`, with its budget reservation) before the service
 * is called, and its outcome (`effect.completed`: result or error, labels, usage, what it cost)
 * after, with secrets and credential shapes redacted, before the agent sees anything. A repeat of
 * the syscall is answered from the completed event in the log.
 *
 * Large parts of a request or result are logged once by content hash (src/protocol/blobs.ts):
 * the service and the agent get the values themselves; the events name the blobs.
 */
import {
  EVENT_VERSION,
  ErrorCode,
  EventType,
  Label,
  MaxwellError,
  ServiceName,
  decodeMap,
  encode,
  joinLabels,
  requestParts,
  resolveBlobs,
  resultParts,
  withBlobRefs,
  type BlobPart,
  type BlobPath,
  type BlobRef,
  newEventId,
  newTraceId,
  serviceSubjects,
  subjects,
  type EffectCompletedEvent,
  type EffectStartedEvent,
  type EventId,
  type LogEvent,
  type Reservation,
  type ServiceCall,
  type ServiceReply,
  type SyscallReply,
  type SyscallResult,
  type WireError,
  LOG_STREAM,
} from "../../src/protocol/mod.js";
import { costMicroUsd } from "../../src/protocol/prices.js";
import { redact } from "../../src/protocol/redact.js";
import { jetstreamManager, readEntriesAt, requestRaw, type JetStreamManager, type NatsConnection } from "../../src/transport/connection.js";
import type { Logger } from "../../src/runtime/logger.js";
import type { Appender } from "./appender.js";
import type { Outcome, PendingOf } from "./decide.js";
import { SecretStore } from "../../src/runtime/secrets.js";
import { NamespaceKeys } from "../../src/memory/keys.js";
import { MEMORY_LOGGED_WRITE_OPS, parseMemoryArgs } from "../../src/memory/ops.js";
import { parseNamespace } from "../../src/memory/namespace.js";
import { openMemoryResult, sealMemoryArgs } from "../../src/memory/sealing.js";
import type { KernelState, OpenEffect } from "./state.js";

/** How long the kernel waits for each service. */
const SERVICE_TIMEOUT_MS: Record<string, number> = { llm: 300_000, tools: 60_000, memory: 15_000 };
/** Memory operations that change the store (applied again, idempotently, after a kernel crash). */
const MEMORY_WRITES: ReadonlySet<string> = MEMORY_LOGGED_WRITE_OPS;
/** Largest export one logged import may carry (a log entry must fit a NATS message). */
const MAX_IMPORT_BYTES = 600 * 1024;

export interface EffectRunnerOptions {
  nc: NatsConnection;
  appender: Appender;
  state: KernelState;
  log: Logger;
  /** Data directory holding the secret store; without it no secret can be injected. */
  dataDir?: string;
}

type EffectOutcome = Extract<Outcome, { kind: "effect" }>;

/**
 * The answer an agent gets for a recorded effect outcome. Memory content is in the log sealed
 * under its namespace key; `open` unseals it for the agent (erased content stays unreadable).
 */
export function effectReply(e: EffectCompletedEvent, open: (e: EffectCompletedEvent) => unknown = (x) => x.result): SyscallReply {
  if (e.error) return { ok: false, error: e.error };
  const effect: NonNullable<SyscallResult["effect"]> = { result: open(e), labels: e.labels };
  if (e.usage) effect.usage = e.usage;
  return { ok: true, result: { event: e.id, seq: e.seq, trace: e.trace, effect, ...(e.labels.length > 0 ? { labels: e.labels } : {}) } };
}

export class EffectRunner {
  private readonly secrets: SecretStore | undefined;
  /** Per-namespace memory keys: memory content is sealed in the log so erasing a key erases it. */
  private readonly memoryKeys: NamespaceKeys | undefined;
  /** Memory calls run one at a time per namespace, in log order, so the store applies them in that order. */
  private readonly memoryQueues = new Map<string, Promise<unknown>>();

  constructor(private readonly opts: EffectRunnerOptions) {
    this.secrets = opts.dataDir ? SecretStore.forDataDir(opts.dataDir) : undefined;
    this.memoryKeys = opts.dataDir ? NamespaceKeys.forDataDir(opts.dataDir) : undefined;
  }

  /** What the agent sees of a recorded outcome: memory reads opened, everything else as logged. */
  private readonly open = (e: EffectCompletedEvent): unknown => {
    if (e.kind !== "mem" || !this.memoryKeys) return e.result;
    try {
      return openMemoryResult(this.memoryKeys, e.op, e.result);
    } catch (err) {
      this.opts.log.error({ err: String(err), effect: e.effect }, "could not open a memory result");
      return e.result;
    }
  };

  /** Records the start, calls the service, records the outcome, answers. */
  async run(outcome: EffectOutcome, traceparent: string | undefined): Promise<SyscallReply> {
    const { state, appender } = this.opts;
    if (outcome.event.kind === "mem" && this.memoryKeys) {
      // Memory values go into the log sealed under their namespace's key, never in the clear.
      outcome.event.args = sealMemoryArgs(this.memoryKeys, outcome.event.op, outcome.event.target, outcome.event.args);
    }
    if (outcome.charge) state.budgets.hold(outcome.charge);
    const args = outcome.event.args;
    let started: LogEvent;
    try {
      const refs = await this.storeBlobs(requestParts(outcome.event.kind, args));
      const logged = withBlobRefs(outcome.event, refs);
      started = await appender.append(outcome.subject, outcome.msgId, () => logged, traceparent);
    } finally {
      if (outcome.charge) state.budgets.release(outcome.charge);
    }
    if (started.type !== EventType.EffectStarted) {
      // The same syscall id was stored before (a duplicate); its outcome is or will be recorded.
      throw new MaxwellError(ErrorCode.Conflict, `effect ${outcome.msgId} was already started`);
    }
    const completed = await this.complete({ ...started, args }, outcome.call, traceparent);
    return effectReply(completed, this.open);
  }

  /**
   * Stores each part as a blob entry, unless the log already holds one of that hash, and returns
   * where each went. A failure leaves at most an unreferenced blob behind.
   */
  private async storeBlobs(parts: readonly BlobPart[]): Promise<{ path: BlobPath; ref: BlobRef }[]> {
    const out: { path: BlobPath; ref: BlobRef }[] = [];
    for (const p of parts) {
      let seq = this.opts.state.blobs.get(p.hash);
      if (seq === undefined) {
        const stored = await this.opts.appender.append(subjects.logBlob(), `blob:${p.hash}`, () => ({
          v: EVENT_VERSION,
          id: newEventId(),
          at: Date.now(),
          type: EventType.Blob,
          hash: p.hash,
          size: p.bytes.length,
          data: p.bytes,
        }));
        seq = stored.seq;
      }
      out.push({ path: p.path, ref: { hash: p.hash, seq, size: p.bytes.length } });
    }
    return out;
  }

  /**
   * Calls the service for a started effect (whose `args` are the values, not their blobs) and
   * records the outcome; returns it with the result in place.
   */
  private async complete(started: EffectStartedEvent, call: EffectOutcome["call"], traceparent: string | undefined): Promise<EffectCompletedEvent> {
    const t0 = performance.now();
    let reply: ServiceReply;
    if (started.kind === "mem") {
      const ns = started.target;
      const previous = this.memoryQueues.get(ns) ?? Promise.resolve();
      const mine = previous.then(() => this.callService(started, call, traceparent));
      const tail = mine.catch(() => undefined);
      this.memoryQueues.set(ns, tail);
      reply = await mine;
      if (this.memoryQueues.get(ns) === tail) this.memoryQueues.delete(ns);
    } else {
      reply = await this.callService(started, call, traceparent);
    }
    const event = this.outcomeEvent(started, call, reply);
    const logged = withBlobRefs(event, await this.storeBlobs(resultParts(started.kind, event.result)));
    const stored = await this.opts.appender.append(subjects.logEffect(started.actor), `${started.actor}:${started.syscall}:done`, () => logged, traceparent);
    if (stored.type !== EventType.EffectCompleted) throw new MaxwellError(ErrorCode.Internal, `expected the effect's outcome at seq ${stored.seq}, found ${stored.type}`);
    this.opts.log.info(
      { actor: started.actor, kind: started.kind, target: started.target, op: started.op, ok: !stored.error, code: stored.error?.code, ms: Math.round(performance.now() - t0), labels: stored.labels, redactions: stored.redactions },
      "effect completed",
    );
    // A duplicate append returns the outcome stored before, whose result may be by hash.
    return stored.id === logged.id ? { ...stored, result: event.result } : this.resolve(stored);
  }

  private async callService(started: EffectStartedEvent, call: EffectOutcome["call"], traceparent: string | undefined): Promise<ServiceReply> {
    const timeoutMs = SERVICE_TIMEOUT_MS[call.service] ?? 60_000;
    const request: ServiceCall = {
      effect: started.id,
      seq: started.seq,
      at: started.at,
      op: call.op,
      actor: started.actor,
      principal: started.principal,
      trace: started.trace,
      target: started.target,
      args: started.args,
      labels: started.labels,
      deadline: Date.now() + timeoutMs,
    };
    if (call.manifest !== undefined) request.manifest = call.manifest;
    if (call.secrets) {
      const injected: Record<string, string> = {};
      for (const [local, name] of Object.entries(call.secrets)) {
        const value = this.secrets?.get(name);
        if (value === undefined) {
          return { ok: false, error: { code: ErrorCode.Unavailable, message: `tool '${started.target}' needs the secret '${name}', which is not in the kernel's secret store (maxwell secret set ${name})` } };
        }
        injected[local] = value;
      }
      request.secrets = injected;
    }
    try {
      const raw = await requestRaw(this.opts.nc, serviceSubjects.call(call.service, call.op), encode(request), { timeoutMs, ...(traceparent ? { traceparent } : {}) });
      const reply = decodeMap(raw) as unknown as ServiceReply;
      if (typeof reply !== "object" || reply === null || typeof reply.ok !== "boolean") {
        return { ok: false, error: { code: ErrorCode.Internal, message: `the ${call.service} service answered something that is not a service reply` } };
      }
      return reply;
    } catch (err) {
      const e = MaxwellError.from(err, ErrorCode.Unavailable);
      const message = /503|no responders/i.test(e.message) ? `no ${call.service} service is running to carry out ${started.kind} ${started.target}` : `the ${call.service} service did not answer: ${e.message}`;
      return { ok: false, error: { code: e.code === ErrorCode.Timeout ? ErrorCode.Timeout : ErrorCode.Unavailable, message } };
    }
  }

  /** The completed event for a service's reply: redacted, labeled, settled. */
  private outcomeEvent(started: EffectStartedEvent, call: EffectOutcome["call"], reply: ServiceReply): PendingOf<EffectCompletedEvent> {
    const event: PendingOf<EffectCompletedEvent> = {
      v: EVENT_VERSION,
      id: newEventId(),
      at: Date.now(),
      type: EventType.EffectCompleted,
      actor: started.actor,
      principal: started.principal,
      syscall: started.syscall,
      trace: started.trace,
      causation: started.causation ?? started.id,
      depth: started.depth,
      effect: started.id,
      kind: started.kind,
      op: started.op,
      target: started.target,
      labels: started.labels,
    };
    if (started.causation === undefined) delete event.causation;
    const spent: Reservation = {};
    if (started.kind === "tool") spent.toolCalls = 1;
    if (reply.ok) {
      // Secrets never reach the log or the agent: the result is scanned before it is recorded.
      let result = reply.result;
      if (started.kind !== "mem") {
        const scrubbed = redact(result, this.secrets?.values() ?? []);
        result = scrubbed.value;
        if (scrubbed.redactions > 0) event.redactions = scrubbed.redactions;
      }
      event.result = result;
      const added = call.toolEffect === "external" ? [Label.Untrusted] : [];
      event.labels = joinLabels(started.labels, reply.labels, added);
      if (reply.usage) {
        event.usage = reply.usage;
        spent.tokens = reply.usage.inputTokens + reply.usage.outputTokens;
        const cost = costMicroUsd(reply.usage);
        if (cost !== undefined) spent.microUsd = cost;
      }
    } else {
      // An error's text comes from the world too (an external tool's refusal, a web server's
      // message): it is labeled like a result would be.
      if (call.toolEffect === "external") event.labels = joinLabels(started.labels, [Label.Untrusted]);
      const scrubbed = redact(reply.error, this.secrets?.values() ?? []);
      event.error = sanitizeError(scrubbed.value);
      if (scrubbed.redactions > 0) event.redactions = scrubbed.redactions;
    }
    if (Object.keys(spent).length > 0) event.spent = spent;
    return event;
  }

  /**
   * An operator erases a memory namespace: its key is destroyed first (from then on everything
   * sealed under it, in the log and in any copy of it, is unreadable, replay included), then the
   * erasure is logged and the memory service drops the namespace.
   */
  async eraseNamespace(namespace: string, policySet: string): Promise<{ seq: number; erasedKey: boolean }> {
    const keys = this.keysOrRefuse();
    const ns = parseNamespace(namespace);
    const erasedKey = keys.erase(ns);
    const { started, completed } = await this.operatorEffect("erase", ns, {}, policySet);
    if (completed.error) this.opts.log.warn({ namespace: ns, err: completed.error.message }, "memory service did not drop the erased namespace now; it will when it catches up with the log");
    this.opts.log.warn({ namespace: ns, erasedKey }, "memory namespace erased");
    return { seq: started.seq, erasedKey };
  }

  /**
   * An operator erases one record: its own key is destroyed (every value it ever had, in the log
   * and anywhere else, is unreadable from then on; the rest of the namespace is untouched), then
   * its deletion is logged and applied.
   */
  async eraseRecord(namespace: string, key: string, policySet: string): Promise<{ seq: number; erasedKey: boolean }> {
    const keys = this.keysOrRefuse();
    const ns = parseNamespace(namespace);
    const args = parseMemoryArgs("delete", { key }) as { key: string };
    const erasedKey = keys.eraseRecord(ns, args.key);
    const { started, completed } = await this.operatorEffect("delete", ns, { key: args.key }, policySet);
    if (completed.error) this.opts.log.warn({ namespace: ns, key: args.key, err: completed.error.message }, "memory service did not delete the erased record now; it will when it catches up with the log");
    this.opts.log.warn({ namespace: ns, key: args.key, erasedKey }, "memory record erased");
    return { seq: started.seq, erasedKey };
  }

  /**
   * An operator imports an export into an empty namespace: checked by the memory service first
   * (nothing bad reaches the log), then logged with its lines sealed under the namespace key
   * (so an import is as erasable as any write), then applied.
   */
  async importNamespace(namespace: string, lines: unknown, policySet: string): Promise<{ seq: number; records: number }> {
    const keys = this.keysOrRefuse();
    const ns = parseNamespace(namespace);
    if (!Array.isArray(lines) || !lines.every((l) => typeof l === "string")) throw new MaxwellError(ErrorCode.BadRequest, "import needs 'lines': the export's JSON lines");
    const size = lines.reduce((n, l: string) => n + l.length + 1, 0);
    if (size > MAX_IMPORT_BYTES) throw new MaxwellError(ErrorCode.BadRequest, `the export is ${size} bytes, over the ${MAX_IMPORT_BYTES}-byte limit of one logged import: split it (keep the header line at the top of each part)`);
    const check = decodeMap(
      await requestRaw(this.opts.nc, serviceSubjects.call(ServiceName.Memory, "admin"), encode({ effect: newEventId(), seq: 0, at: Date.now(), op: "admin", actor: "admin", principal: "admin", trace: newTraceId(), target: ns, args: { op: "import-check", lines, namespace: ns }, labels: [], deadline: Date.now() + 30_000 }), { timeoutMs: 30_000 }),
    ) as unknown as ServiceReply;
    if (!check.ok) throw MaxwellError.fromWire(check.error);
    const { started, completed } = await this.operatorEffect("import", ns, { sealed: keys.seal(ns, lines), lines: lines.length }, policySet);
    if (completed.error) throw MaxwellError.fromWire(completed.error);
    const records = (completed.result as { records?: number } | undefined)?.records ?? 0;
    this.opts.log.info({ namespace: ns, records, seq: started.seq }, "memory namespace imported");
    return { seq: started.seq, records };
  }

  private keysOrRefuse(): NamespaceKeys {
    if (!this.memoryKeys) throw new MaxwellError(ErrorCode.Unavailable, "this kernel has no data directory, so it holds no memory keys");
    return this.memoryKeys;
  }

  /** Logs and carries out a memory operation an operator asked for (not an agent's syscall). */
  private async operatorEffect(op: "erase" | "import" | "delete", ns: string, args: unknown, policySet: string): Promise<{ started: EffectStartedEvent; completed: EffectCompletedEvent }> {
    const id = newEventId();
    const event: PendingOf<EffectStartedEvent> = {
      v: EVENT_VERSION,
      id,
      at: Date.now(),
      type: EventType.EffectStarted,
      actor: "kernel",
      principal: "admin",
      syscall: `${op}.${id}:0` as EffectStartedEvent["syscall"],
      trace: newTraceId(),
      depth: 0,
      kind: "mem",
      op,
      target: ns,
      args,
      decision: { effect: "allow", policies: [`kernel:operator-${op}`], policySet },
      labels: [],
    };
    const started = await this.opts.appender.append(subjects.logEffect("kernel"), `kernel:${op}.${id}`, () => event);
    if (started.type !== EventType.EffectStarted) throw new MaxwellError(ErrorCode.Internal, `the ${op} was not recorded as expected`);
    const completed = await this.complete(started, { service: ServiceName.Memory, op }, undefined);
    return { started, completed };
  }

  /**
   * After a kernel restart: effects started but never completed. Memory writes are applied again
   * (the store applies each effect once); anything else is recorded as interrupted, since the
   * kernel cannot know whether the model or tool acted.
   */
  async recoverInterrupted(): Promise<void> {
    const open = [...this.opts.state.effects.entries()];
    for (const [id, effect] of open) {
      const started = await this.startedEvent(id, effect);
      if (!started) continue;
      if (effect.kind === "mem" && MEMORY_WRITES.has(effect.op)) {
        this.opts.log.warn({ effect: id, op: effect.op, target: effect.target }, "re-applying a memory write interrupted by a restart");
        await this.complete(started, { service: ServiceName.Memory, op: effect.op }, undefined).catch((err: unknown) => this.opts.log.error({ err: String(err), effect: id }, "could not re-apply an interrupted memory write"));
        continue;
      }
      const event: PendingOf<EffectCompletedEvent> = {
        v: EVENT_VERSION,
        id: newEventId(),
        at: Date.now(),
        type: EventType.EffectCompleted,
        actor: effect.actor,
        principal: effect.principal,
        syscall: started.syscall,
        trace: effect.trace,
        depth: started.depth,
        effect: id,
        kind: effect.kind,
        op: effect.op,
        target: effect.target,
        labels: effect.labels,
        error: { code: ErrorCode.Unavailable, message: `the kernel restarted while ${effect.kind} ${effect.target} was in progress; whether it acted is unknown, so it is not retried` },
      };
      if (effect.causation !== undefined) event.causation = effect.causation;
      await this.opts.appender.append(subjects.logEffect(effect.actor), `${effect.actor}:${started.syscall}:done`, () => event);
      this.opts.log.warn({ effect: id, kind: effect.kind, target: effect.target }, "effect interrupted by a restart recorded as failed");
    }
  }

  private jsm: JetStreamManager | undefined;

  private async startedEvent(id: EventId, effect: OpenEffect): Promise<EffectStartedEvent | undefined> {
    const e = await this.read(effect.seq);
    return e?.type === EventType.EffectStarted && e.id === id ? this.resolve(e) : undefined;
  }

  /** The event with the parts it stored by hash read back from the log and put in place. */
  private async resolve<E extends EffectStartedEvent | EffectCompletedEvent>(e: E, jsm?: JetStreamManager): Promise<E> {
    if (!e.blobs) return e;
    const manager = jsm ?? this.jsm ?? (this.jsm = await jetstreamManager(this.opts.nc));
    const [resolved] = await resolveBlobs([e], (seqs) => readEntriesAt(manager, seqs));
    return resolved as E;
  }

  private async read(seq: number, jsm?: JetStreamManager): Promise<LogEvent | undefined> {
    const manager = jsm ?? this.jsm ?? (this.jsm = await jetstreamManager(this.opts.nc));
    const m = await manager.streams.getMessage(LOG_STREAM, { seq });
    return m ? (decodeMap(m.data) as unknown as LogEvent) : undefined;
  }

  /** Answers a repeated effect syscall from its recorded outcome. */
  async answerFromLog(seq: number, jsm: JetStreamManager): Promise<SyscallReply> {
    const e = await this.read(seq, jsm);
    if (e?.type !== EventType.EffectCompleted) {
      return { ok: false, error: { code: ErrorCode.Internal, message: `the outcome recorded at seq ${seq} could not be read back` } };
    }
    try {
      return effectReply(await this.resolve(e, jsm), this.open);
    } catch (err) {
      this.opts.log.error({ err: String(err), seq }, "a recorded outcome's blob could not be read back");
      return { ok: false, error: MaxwellError.from(err).toWire() };
    }
  }
}

/** A service's error as the kernel records it: the closed set of codes, a bounded message. */
function sanitizeError(value: unknown): WireError {
  const e = value as Partial<WireError> | undefined;
  const code = e?.code && Object.values(ErrorCode).includes(e.code) ? e.code : ErrorCode.Internal;
  const message = typeof e?.message === "string" ? e.message.slice(0, 2000) : "the service failed without saying why";
  return { code, message };
}
