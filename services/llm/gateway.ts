/**
 * The model gateway: the only process that holds a model API key. The kernel, having authorized
 * an agent's `llm` syscall and recorded its intent, calls `mx.svc.llm.complete` with a
 * {@link ServiceCall} whose args are Messages API parameters; the gateway checks them, applies
 * the route table, streams the call through `@anthropic-ai/sdk` (retries with backoff, bounded
 * by the call's deadline) and answers the full Message with its token usage, or a typed error.
 *
 * A call is idempotent per effect id: the kernel may send the same call again after a crash or a
 * lost reply, and within this process the gateway answers it from memory instead of paying twice.
 */
import { createHash } from "node:crypto";
import Anthropic, { type ClientOptions } from "@anthropic-ai/sdk";
import type { Message } from "@anthropic-ai/sdk/resources/messages";
import { decodeMap, encode } from "../../src/protocol/codec.js";
import { ErrorCode, MaxwellError, type WireError } from "../../src/protocol/errors.js";
import { ServiceName, ServiceOp, serviceSubjects, type ServiceCall, type ServiceReply, type Usage } from "../../src/protocol/services.js";
import { subjects } from "../../src/protocol/subjects.js";
import type { Logger } from "../../src/runtime/logger.js";
import { connectNats, type Msg, type NatsConnection, type Subscription } from "../../src/transport/connection.js";
import { apiErrorToWire, isRetryableMidStream, redact, type AbandonReason } from "./api-error.js";
import { DEFAULT_LLM_CONFIG } from "./config.js";
import { parseCompleteArgs } from "../../src/protocol/llm-params.js";
import { routeModel, type Route } from "./routes.js";

export interface LlmGatewayOptions {
  servers: string;
  /** The gateway's NATS credential (`<data>/creds/svc-llm.creds`): a path or its content. */
  creds: string | Uint8Array;
  /** The Messages API key. Never logged, never in a reply. */
  apiKey: string;
  /** Messages API base URL; default the SDK's. The offline model's URL when there is no key. */
  baseURL?: string;
  routes?: readonly Route[];
  /** Retries of a failed attempt (429, 5xx, connection errors, overload mid-stream). Default 2. */
  maxRetries?: number;
  /** Longest a call may take, retries included, whatever its deadline says. Default 10 minutes. */
  timeoutMs?: number;
  /** Largest call accepted, in bytes. Default 1 MiB. */
  maxRequestBytes?: number;
  /** Replies remembered for repeated effect ids. Default 1024. */
  cacheSize?: number;
  log: Logger;
}

/** A reply kept for its effect id, with the fingerprint of the call it answered. */
interface Remembered {
  fingerprint: string;
  reply: Promise<ServiceReply>;
}

/** A model call under way, so the gateway can abandon it when it stops. */
interface Running {
  controller: AbortController;
  abandoned?: AbandonReason;
}

/** Whether a reply may be replayed for the same effect: successes and refusals that would not change. */
function isFinal(reply: ServiceReply): boolean {
  return reply.ok || reply.error.code === ErrorCode.BadRequest || reply.error.code === ErrorCode.NotFound;
}

function failure(error: WireError): ServiceReply {
  return { ok: false, error };
}

function fingerprintOf(call: ServiceCall): string {
  return createHash("sha256")
    .update(encode([call.op, call.target ?? null, call.args ?? null]))
    .digest("hex");
}

/** Checks the envelope of a decoded call; the args are checked by {@link parseCompleteArgs}. */
function parseServiceCall(value: Record<string, unknown>, subject: string): ServiceCall {
  const bad = (why: string): MaxwellError => new MaxwellError(ErrorCode.BadRequest, `service call: ${why}`);
  if (typeof value["effect"] !== "string" || value["effect"] === "") throw bad("'effect' must be the id of the effect.started event");
  if (typeof value["op"] !== "string") throw bad("'op' must name the operation");
  if (subject !== serviceSubjects.call(ServiceName.Llm, value["op"])) throw bad(`'op' is '${value["op"]}' but the call came on ${subject}`);
  if (typeof value["actor"] !== "string" || value["actor"] === "") throw bad("'actor' must name the agent");
  if (typeof value["deadline"] !== "number" || !Number.isFinite(value["deadline"])) throw bad("'deadline' must be a time in ms since the epoch");
  if (value["target"] !== undefined && typeof value["target"] !== "string") throw bad("'target' must name the model");
  return value as unknown as ServiceCall;
}

/** The SDK's log lines, into ours. Only the message: the SDK's extra arguments can hold model output. */
function sdkLogger(log: Logger): NonNullable<ClientOptions["logger"]> {
  const child = log.child({ component: "anthropic-sdk" });
  return {
    error: (message: string) => child.error(message),
    warn: (message: string) => child.warn(message),
    info: (message: string) => child.info(message),
    debug: (message: string) => child.debug(message),
  };
}

/** The Message as plain data: no SDK getters, no `undefined`, no SDK-only fields. */
function plainMessage(message: Message): Record<string, unknown> {
  const plain = JSON.parse(JSON.stringify(message)) as Record<string, unknown>;
  delete plain["parsed_output"];
  if (Array.isArray(plain["content"])) for (const block of plain["content"] as Record<string, unknown>[]) delete block["parsed_output"];
  return plain;
}

function usageOf(message: Message): Usage {
  const u = message.usage;
  // Cache writes and reads are input the model read; Usage has one input count, so they go there.
  const input = u.input_tokens + (u.cache_creation_input_tokens ?? 0) + (u.cache_read_input_tokens ?? 0);
  return { model: message.model, inputTokens: input, outputTokens: u.output_tokens };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The model gateway service. */
export class LlmGateway {
  private readonly client: Anthropic;
  private readonly routes: readonly Route[];
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly maxRequestBytes: number;
  private readonly cacheSize: number;
  private readonly log: Logger;
  private nc: NatsConnection | undefined;
  private sub: Subscription | undefined;
  /** Replies by effect id, oldest first (a Map keeps insertion order: an LRU). */
  private readonly replies = new Map<string, Remembered>();
  private readonly running = new Set<Running>();
  private readonly handling = new Set<Promise<void>>();
  private stopping = false;

  constructor(private readonly opts: LlmGatewayOptions) {
    this.routes = opts.routes ?? [];
    this.maxRetries = opts.maxRetries ?? DEFAULT_LLM_CONFIG.maxRetries;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_LLM_CONFIG.timeoutMs;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_LLM_CONFIG.maxRequestBytes;
    this.cacheSize = opts.cacheSize ?? 1024;
    this.log = opts.log;
    this.client = new Anthropic({
      apiKey: opts.apiKey,
      ...(opts.baseURL ? { baseURL: opts.baseURL } : {}),
      maxRetries: this.maxRetries,
      timeout: this.timeoutMs,
      logger: sdkLogger(opts.log),
      logLevel: "warn",
    });
  }

  /** Connects and starts answering calls. */
  async start(): Promise<void> {
    const identity = serviceSubjects.identity(ServiceName.Llm);
    this.nc = await connectNats({
      servers: this.opts.servers,
      creds: this.opts.creds,
      name: identity,
      inboxPrefix: subjects.inboxPrefix(identity),
      reconnect: true,
    });
    this.sub = this.nc.subscribe(serviceSubjects.all(ServiceName.Llm), {
      queue: serviceSubjects.queue(ServiceName.Llm),
      callback: (err, msg) => {
        if (err) {
          this.log.error({ err: err.message }, "llm subscription failed");
          return;
        }
        this.onMessage(msg);
      },
    });
    // The server has the subscription once it answered the flush's ping: calls from now on reach us.
    await this.nc.flush();
    this.log.info({ subject: serviceSubjects.all(ServiceName.Llm), routes: this.routes.length, baseURL: this.opts.baseURL ?? "default" }, "llm gateway serving");
  }

  /**
   * Stops taking calls, lets the calls under way finish for up to `graceMs`, abandons the rest
   * (each is answered `unavailable`), then closes the connection after the answers are flushed.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.sub?.drain().catch(() => undefined);
    const settled = Promise.allSettled([...this.handling]);
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([settled.then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)))]);
    clearTimeout(timer);
    if (late) {
      for (const r of this.running) {
        r.abandoned = "stopping";
        r.controller.abort();
      }
      await Promise.allSettled([...this.handling]);
    }
    await this.nc?.drain().catch(() => undefined);
  }

  /** Resolves when the NATS connection closes: with the error that closed it, if one did. */
  async closed(): Promise<void | Error> {
    if (!this.nc) throw new MaxwellError(ErrorCode.Unavailable, "the llm gateway was not started");
    return this.nc.closed();
  }

  /**
   * Answers one `complete` call (what a NATS message is turned into; callable directly in tests
   * and in-process). Never throws. A call whose effect id was answered before gets the same
   * answer without another model call; one with the same effect id but different arguments is a
   * `conflict`.
   */
  complete(call: ServiceCall): Promise<ServiceReply> {
    const fingerprint = fingerprintOf(call);
    const known = this.replies.get(call.effect);
    if (known) {
      if (known.fingerprint !== fingerprint) {
        return Promise.resolve(failure({ code: ErrorCode.Conflict, message: `effect ${call.effect} was already called with different arguments` }));
      }
      this.replies.delete(call.effect);
      this.replies.set(call.effect, known);
      this.log.info({ effect: call.effect, actor: call.actor }, "llm call repeated: answered from memory");
      return known.reply;
    }
    const reply = this.run(call);
    this.remember(call.effect, { fingerprint, reply });
    void reply.then((r) => {
      // Transient failures are forgotten, so a retry of the effect calls the model again.
      if (!isFinal(r) && this.replies.get(call.effect)?.reply === reply) this.replies.delete(call.effect);
    });
    return reply;
  }

  private remember(effect: string, entry: Remembered): void {
    this.replies.set(effect, entry);
    while (this.replies.size > this.cacheSize) {
      const oldest = this.replies.keys().next();
      if (oldest.done) break;
      this.replies.delete(oldest.value);
    }
  }

  private onMessage(msg: Msg): void {
    const handled = this.answer(msg.subject, msg.data)
      .then((reply) => this.respond(msg, reply))
      .catch((err: unknown) => this.log.error({ err: err instanceof Error ? err.message : String(err), subject: msg.subject }, "llm call could not be answered"))
      .finally(() => this.handling.delete(handled));
    this.handling.add(handled);
  }

  private async answer(subject: string, data: Uint8Array): Promise<ServiceReply> {
    try {
      if (data.length > this.maxRequestBytes) {
        throw new MaxwellError(ErrorCode.BadRequest, `llm call is ${data.length} bytes; the gateway accepts at most ${this.maxRequestBytes}`);
      }
      const call = parseServiceCall(decodeMap(data), subject);
      if (call.op !== ServiceOp.Complete) {
        throw new MaxwellError(ErrorCode.BadRequest, `the llm service has no operation '${call.op}' (it has: ${ServiceOp.Complete})`);
      }
      return await this.complete(call);
    } catch (err) {
      const e = MaxwellError.from(err);
      this.log.warn({ subject, code: e.code, err: e.message }, "llm call refused");
      return failure(e.toWire());
    }
  }

  private respond(msg: Msg, reply: ServiceReply): void {
    if (!msg.reply) {
      this.log.warn({ subject: msg.subject }, "llm call without a reply subject: nobody to answer");
      return;
    }
    let bytes = encode(reply);
    const max = this.nc?.info?.max_payload;
    if (max !== undefined && bytes.length > max) {
      this.log.error({ bytes: bytes.length, max }, "llm reply is larger than the server's max payload");
      bytes = encode(failure({ code: ErrorCode.Internal, message: `the model's answer (${bytes.length} bytes) is larger than NATS max_payload (${max}); ask for fewer max_tokens` }));
    }
    msg.respond(bytes);
  }

  /** Checks, routes and makes one model call. Never throws. */
  private async run(call: ServiceCall): Promise<ServiceReply> {
    const started = Date.now();
    let params;
    try {
      params = parseCompleteArgs(call.args, call.target || undefined);
    } catch (err) {
      const e = MaxwellError.from(err);
      this.log.warn({ effect: call.effect, actor: call.actor, err: e.message }, "llm call refused");
      return failure(e.toWire());
    }
    const model = routeModel(this.routes, call.actor, params.model);
    const timeoutMs = Math.floor(Math.min(this.timeoutMs, call.deadline - started));
    const context = { effect: call.effect, actor: call.actor, requested: params.model, model };
    if (timeoutMs < 1) {
      this.log.warn(context, "llm call arrived after its deadline");
      return failure({ code: ErrorCode.Timeout, message: "the call's deadline had passed when the gateway received it" });
    }
    const running: Running = { controller: new AbortController() };
    if (this.stopping) running.abandoned = "stopping";
    this.running.add(running);
    const timer = setTimeout(() => {
      running.abandoned ??= "deadline";
      running.controller.abort();
    }, timeoutMs);
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          if (running.abandoned) running.controller.abort();
          const stream = this.client.messages.stream(
            { ...params, model },
            { signal: running.controller.signal, timeout: Math.max(1, timeoutMs - (Date.now() - started)), maxRetries: this.maxRetries },
          );
          const message = await stream.finalMessage();
          const usage = usageOf(message);
          this.log.info({ ...context, answered: message.model, stop: message.stop_reason, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, ms: Date.now() - started }, "llm call answered");
          return { ok: true, result: plainMessage(message), usage };
        } catch (err) {
          if (!running.abandoned && attempt < this.maxRetries && isRetryableMidStream(err)) {
            this.log.warn({ ...context, attempt: attempt + 1, err: redact(String((err as Error).message), [this.opts.apiKey]) }, "model API failed mid-stream; retrying");
            await sleep(Math.min(8000, 500 * 2 ** attempt), running.controller.signal);
            continue;
          }
          const error = apiErrorToWire(err, { ...(running.abandoned ? { abandoned: running.abandoned } : {}), timeoutMs, secrets: [this.opts.apiKey] });
          this.log.warn({ ...context, code: error.code, err: error.message, detail: error.detail, ms: Date.now() - started }, "llm call failed");
          return failure(error);
        }
      }
    } catch (err) {
      const message = redact(err instanceof Error ? err.message : String(err), [this.opts.apiKey]);
      this.log.error({ ...context, err: message }, "llm call failed unexpectedly");
      return failure({ code: ErrorCode.Internal, message: `model gateway: ${message}` });
    } finally {
      clearTimeout(timer);
      this.running.delete(running);
    }
  }
}
