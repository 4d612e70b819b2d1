/**
 * The memory service: answers the kernel's calls (`mx.svc.memory.<op>`, a msgpack ServiceCall)
 * from the store, and keeps the store caught up with the log. No agent can reach it: its
 * credential may only answer what it is sent, and the kernel authorized every call before it was
 * sent (and logged every write before that).
 *
 * - Writes are applied through apply.ts, exactly as a rebuild applies them, each once (a repeat is
 *   answered with the recorded outcome). They are handed to the store in arrival order, which for
 *   each namespace is log order (the kernel runs one call per namespace at a time).
 * - Reads are answered at the call's time (`at`), with record contents sealed under the namespace
 *   keys because the kernel logs the answer, and with the join of the records' labels.
 * - `admin` answers operator requests (admin.ts).
 * - Catching up: at start, and every `catchUpMs` while serving, the log is read from the store's
 *   resume point through the kernel and every memory write not yet applied is applied. That covers
 *   writes logged while the service was down, and calls the kernel never made (it crashed between
 *   logging and calling).
 *
 * Nothing a caller sends can stop the service: every failure is logged and answered as an error.
 */
import type { MemoryVerifyResult } from "../../src/runtime/admin.js";
import { ErrorCode, MaxwellError, decodeMap, encode, serviceSubjects, type ServiceCall, type ServiceReply } from "../../src/protocol/mod.js";
import type { Logger } from "../../src/runtime/logger.js";
import type { Msg, NatsConnection, Subscription } from "../../src/transport/connection.js";
import { answerAdmin } from "./admin.js";
import { applyLogEvents, eventOfCall, rebuildFromLog, type LogInput, type RebuildReport } from "./apply.js";
import type { NamespaceKeys } from "../../src/memory/keys.js";
import { MEMORY_LOGGED_WRITE_OPS, MEMORY_READ_OPS, MemoryOp } from "../../src/memory/ops.js";
import { answerRead } from "./reads.js";
import { checkTime } from "../../src/memory/record.js";
import type { MemoryStore } from "./store.js";

/**
 * The store's "now": the time of the call being answered (the kernel's clock, recorded in the
 * log), never this process's clock, so answers and a rebuild agree. Open the store with
 * `now: clock.now`.
 */
export class CallClock {
  /** The time reads are judged at; starts at this process's start, moves with every call. */
  at = Date.now();
  /** The latest call time seen: what compaction judges expiry against. */
  latest = 0;
  readonly now = (): number => this.at;

  set(at: number): void {
    this.at = at;
    if (at > this.latest) this.latest = at;
  }
}

export interface MemoryServiceOptions {
  store: MemoryStore;
  keys: NamespaceKeys;
  clock: CallClock;
  log: Logger;
  /** Largest reply (default: NATS's 1 MiB); a larger answer is refused with a hint instead. */
  maxReplyBytes?: number;
  /**
   * Rebuilds the log up to `upTo` into a scratch store and returns its digest at `at`: the
   * `verify` admin request compares it with the live store's. Absent: `verify` is unavailable.
   */
  rebuildDigest?: (upTo: number, at: number) => Promise<{ digest: string; applied: number; ms: number }>;
}


function wireError(err: unknown): ServiceReply {
  return { ok: false, error: MaxwellError.from(err).toWire() };
}

function parseCall(op: string, value: unknown): ServiceCall {
  if (typeof value !== "object" || value === null) throw new MaxwellError(ErrorCode.BadRequest, "expected a service call");
  const c = value as Record<string, unknown>;
  if (typeof c["effect"] !== "string" || c["effect"].length === 0) throw new MaxwellError(ErrorCode.BadRequest, "service call without an effect id");
  if (typeof c["seq"] !== "number" || !Number.isSafeInteger(c["seq"]) || c["seq"] < 0) throw new MaxwellError(ErrorCode.BadRequest, "service call without a log sequence");
  checkTime(c["at"], "at");
  if (c["op"] !== undefined && c["op"] !== op) throw new MaxwellError(ErrorCode.BadRequest, `service call for ${String(c["op"])} sent on the subject of ${op}`);
  for (const field of ["actor", "principal", "target"] as const) {
    if (typeof c[field] !== "string") throw new MaxwellError(ErrorCode.BadRequest, `service call without '${field}'`);
  }
  if (c["labels"] !== undefined && !(Array.isArray(c["labels"]) && c["labels"].every((l) => typeof l === "string"))) {
    throw new MaxwellError(ErrorCode.BadRequest, "service call 'labels' must be an array of strings");
  }
  return { ...(c as unknown as ServiceCall), op, labels: (c["labels"] as string[] | undefined) ?? [] };
}

/** Answers kernel calls from a store. Transport-free: {@link serveMemory} puts it on NATS. */
export class MemoryService {
  private readonly maxReplyBytes: number;
  private warnedUnsealed = false;

  constructor(private readonly opts: MemoryServiceOptions) {
    this.maxReplyBytes = opts.maxReplyBytes ?? 1024 * 1024;
  }

  get store(): MemoryStore {
    return this.opts.store;
  }

  /**
   * Answers a call for `op`. Writes are handed to the store before this returns its promise
   * (callers keep arrival order by calling in order).
   */
  handle(op: string, raw: unknown): Promise<ServiceReply> {
    let call: ServiceCall;
    try {
      call = parseCall(op, raw);
    } catch (err) {
      return Promise.resolve(wireError(err));
    }
    if (MEMORY_LOGGED_WRITE_OPS.has(op)) return this.write(call);
    try {
      if (MEMORY_READ_OPS.has(op)) return Promise.resolve(this.read(call));
      if (op === MemoryOp.Admin) return this.admin(call);
      throw new MaxwellError(ErrorCode.BadRequest, `unknown memory operation ${JSON.stringify(op)}`);
    } catch (err) {
      return Promise.resolve(wireError(err));
    }
  }

  /** Encodes a reply, refusing one too large for a NATS message. */
  encodeReply(reply: ServiceReply): Uint8Array {
    const bytes = encode(reply);
    if (bytes.length <= this.maxReplyBytes) return bytes;
    return encode({
      ok: false,
      error: {
        code: ErrorCode.BadRequest,
        message: `the answer is ${bytes.length} bytes, over the ${this.maxReplyBytes}-byte message limit: ask for fewer records (a smaller k or limit)`,
      },
    } satisfies ServiceReply);
  }

  private write(call: ServiceCall): Promise<ServiceReply> {
    if (!this.warnedUnsealed && (call.op === MemoryOp.Put || call.op === MemoryOp.Append) && typeof call.args === "object" && call.args !== null && "value" in call.args) {
      this.warnedUnsealed = true;
      this.opts.log.warn({ effect: call.effect, op: call.op, target: call.target }, "a memory write was logged with its value in the clear: it cannot be erased from the log (the kernel should log sealMemoryArgs(...))");
    }
    let applied;
    try {
      applied = applyLogEvents(this.opts.store, this.opts.keys, [eventOfCall(call)]);
    } catch (err) {
      return Promise.resolve(wireError(err));
    }
    this.opts.clock.set(call.at);
    return applied.then(
      ([outcome]): ServiceReply => {
        if (outcome === undefined) throw new MaxwellError(ErrorCode.Internal, "no outcome for a write");
        if (outcome.repeated) this.opts.log.info({ effect: call.effect, seq: call.seq, op: call.op }, "repeated write answered from its recorded outcome");
        return outcome.ok ? { ok: true, result: outcome.result } : { ok: false, error: outcome.error ?? { code: ErrorCode.Internal, message: "write failed" } };
      },
      (err: unknown) => {
        this.opts.log.error({ err: MaxwellError.from(err).message, effect: call.effect, seq: call.seq }, "write failed to commit");
        return wireError(MaxwellError.from(err, ErrorCode.Unavailable));
      },
    );
  }

  private read(call: ServiceCall): ServiceReply {
    this.opts.clock.set(call.at);
    const { result, labels } = answerRead(this.opts.store, call.op, call.target, call.args, this.opts.keys);
    return { ok: true, result, ...(labels.length > 0 ? { labels } : {}) };
  }

  private async admin(call: ServiceCall): Promise<ServiceReply> {
    this.opts.clock.set(call.at);
    try {
      if ((call.args as { op?: unknown } | undefined)?.op === "verify") return { ok: true, result: await this.verify(call.at) };
      return { ok: true, result: await answerAdmin(this.opts.store, call.args, call.at) };
    } catch (err) {
      return wireError(err);
    }
  }

  /**
   * State replay for memory: the live digest and the log sequence it reflects are taken at once,
   * then the log up to that sequence is rebuilt into a scratch store and its digest compared.
   */
  private async verify(at: number): Promise<MemoryVerifyResult> {
    if (!this.opts.rebuildDigest) throw new MaxwellError(ErrorCode.Unavailable, "this memory service cannot rebuild a scratch store (no data directory)");
    const appliedSeq = this.opts.store.appliedSeq();
    const live = this.opts.store.digest({ at });
    const replay = await this.opts.rebuildDigest(appliedSeq, at);
    return { identical: live === replay.digest, live, replayed: replay.digest, appliedSeq, at, applied: replay.applied, ms: replay.ms };
  }

  /** Removes expired records and old outcomes, judging expiry by the latest call time seen. */
  async compact(): Promise<void> {
    if (this.opts.clock.latest === 0) return;
    this.opts.clock.set(this.opts.clock.latest);
    const report = await this.opts.store.compact();
    if (report.removed > 0 || report.effectsPruned > 0) this.opts.log.info(report, "memory compacted");
  }

  /** Applies what the log holds beyond the store's resume point. */
  catchUp(entries: (from: number) => AsyncIterable<LogInput>, signal?: AbortSignal): Promise<RebuildReport> {
    const from = this.opts.store.resumeSeq() + 1;
    return rebuildFromLog({ store: this.opts.store, keys: this.opts.keys, entries: entries(from), ...(signal ? { signal } : {}) });
  }
}

/** A running subscription: calls are held (queued in order) until {@link release}. */
export interface MemoryServer {
  /** Starts answering; calls that came while held are answered first, in order. */
  release(): void;
  /** Stops taking calls and waits for those under way. */
  drain(): Promise<void>;
}

/** Subscribes the service to its calls (one queue group: instances share the load). */
export function serveMemory(nc: NatsConnection, service: MemoryService, log: Logger): MemoryServer {
  let held: Msg[] | undefined = [];
  const pending = new Set<Promise<void>>();

  const answer = (msg: Msg): void => {
    const op = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
    let reply: Promise<ServiceReply>;
    try {
      reply = service.handle(op, decodeMap(msg.data));
    } catch (err) {
      reply = Promise.resolve(wireError(err));
    }
    const done = reply
      .then((r) => {
        if (!r.ok) log.warn({ op, code: r.error.code, reason: r.error.message }, "memory call refused");
        if (msg.reply) msg.respond(service.encodeReply(r));
      })
      .catch((err: unknown) => log.error({ op, err: MaxwellError.from(err).message }, "memory call failed"))
      .finally(() => pending.delete(done));
    pending.add(done);
  };

  const sub: Subscription = nc.subscribe(serviceSubjects.all("memory"), {
    queue: serviceSubjects.queue("memory"),
    callback: (err, msg) => {
      if (err) {
        log.error({ err: err.message }, "memory subscription error");
        return;
      }
      if (held) held.push(msg);
      else answer(msg);
    },
  });

  return {
    release() {
      const queued = held ?? [];
      held = undefined;
      for (const msg of queued) answer(msg);
    },
    async drain() {
      await sub.drain();
      if (held) this.release();
      await Promise.allSettled([...pending]);
    },
  };
}
