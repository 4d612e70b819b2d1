/**
 * What an agent author writes: `defineAgent({ name, onMessage })`. The handler gets each
 * delivered message and a context whose methods are syscalls to the kernel. Everything the
 * handler observes (messages, replies, clock, random) is in the log, so it can be replayed.
 */
import type { MessageEvent, Scope } from "../protocol/events.js";
import type { EventId, TraceId } from "../protocol/ids.js";
import type { Logger } from "../runtime/logger.js";

/** A message delivered to an agent. */
export interface Message<T = unknown> {
  /** Event id in the log; also the delivery's dedupe key. */
  id: EventId;
  /** Stream sequence of the event. */
  seq: number;
  /** Who sent it: the authenticated actor. */
  from: string;
  /** On whose behalf the work runs. */
  principal: string;
  kind: "send" | "request";
  body: T;
  trace: TraceId;
  depth: number;
  /** True when the server delivered this event before (e.g. after a crash). */
  redelivered: boolean;
  /**
   * Information-flow labels of the message (`untrusted`, `conf:<class>`): everything the sender
   * had seen. Whatever this handler does carries them too; they cannot be removed.
   */
  labels: string[];
}

/** The message a handler gets for a delivered message event. */
export function messageOf(event: MessageEvent, redelivered: boolean): Message {
  return {
    id: event.id,
    seq: event.seq,
    from: event.actor,
    principal: event.principal,
    kind: event.kind,
    body: event.body,
    trace: event.trace,
    depth: event.depth,
    redelivered,
    labels: event.labels ?? [],
  };
}

/** What a model call returns: the full Messages API response, its labels and token usage. */
export interface LlmResponse {
  /** The Messages API `Message` (id, model, role, content blocks incl. tool_use, stop_reason, usage). */
  message: {
    id: string;
    model: string;
    role: "assistant";
    content: Array<{ type: string; text?: string; id?: string; name?: string; input?: unknown }>;
    stop_reason: string | null;
    usage: { input_tokens: number; output_tokens: number };
    [key: string]: unknown;
  };
  /** Joined labels of everything in the prompt (and of what the handler had seen). */
  labels: string[];
  usage?: { model: string; inputTokens: number; outputTokens: number };
}

/** What a tool call or memory operation returns: the recorded result and its labels. */
export interface EffectResult<T = unknown> {
  result: T;
  labels: string[];
}

export interface SendResult {
  /** Id of the log event that records and delivers the message. */
  event: EventId;
  seq: number;
}

export interface SendOptions {
  /** Labels to add to the message (e.g. `conf:pii`); the kernel joins them with what it knows. */
  labels?: string[];
  /**
   * Narrow what the recipient may do on this work's behalf: fewer actions, an earlier expiry.
   * It can only narrow what was delegated to you; asking for more is denied.
   */
  scope?: Scope;
}

export interface RequestOptions extends SendOptions {
  /** How long the kernel waits for the reply before answering `timeout` (default 30 s). */
  timeoutMs?: number;
}

/** The syscalls available to a handler. */
export interface AgentContext {
  /** This agent's name. */
  readonly name: string;
  /** The message being handled, if any. */
  readonly message: Message | undefined;
  readonly log: Logger;
  /** Sends a message to another agent through the kernel. */
  send(to: string, body: unknown, opts?: SendOptions): Promise<SendResult>;
  /** Asks another agent and waits for its answer (or a typed `timeout`/`forbidden` error). */
  request<R = unknown>(to: string, body: unknown, opts?: RequestOptions): Promise<R>;
  /** Answers the request being handled. Returning a value from the handler does the same. */
  reply(body: unknown): Promise<void>;
  /** The current time in ms, recorded for replay. Use instead of Date.now(). */
  now(): number;
  /** A random number in [0, 1), recorded for replay. Use instead of Math.random(). */
  random(): number;
  /**
   * Calls a model through the kernel and the gateway, with the Messages API shape. Authorized
   * (model allowlist), budgeted (tokens, money) and recorded before the answer is returned.
   */
  llm(params: { model: string; max_tokens: number; messages: unknown[]; [key: string]: unknown }): Promise<LlmResponse>;
  /** Calls a registered tool: arguments checked against its manifest, authorized, recorded. */
  tool<T = unknown>(name: string, args: Record<string, unknown>): Promise<EffectResult<T>>;
  /** A memory operation on `namespace` (`agent:<name>`, `principal:<name>`, `shared:<name>`). */
  memory<T = unknown>(namespace: string, op: string, args?: Record<string, unknown>): Promise<EffectResult<T>>;
}

export interface AgentDefinition {
  /** Agent name; defaults to MAXWELL_AGENT from the environment. */
  name?: string;
  /**
   * Handles one delivered message. For a request, the returned value (if not undefined and
   * `ctx.reply` was not called) is the reply; a thrown error becomes an error reply.
   */
  onMessage(message: Message, ctx: AgentContext): unknown;
  /** Runs once after connecting, before messages are handled. */
  onStart?(ctx: AgentContext): unknown;
  /** Messages handled at once (default 1: in order). */
  concurrency?: number;
}

/** Declares an agent. Run it with `runAgent` (or `main`, which reads the environment). */
export function defineAgent(def: AgentDefinition): AgentDefinition {
  if (typeof def.onMessage !== "function") throw new TypeError("defineAgent needs an onMessage(message, ctx) function");
  return def;
}
