/**
 * Connecting to NATS with a creds file, and the JetStream objects Maxwell uses: the log stream
 * (append-only, deduplicated, file storage), each agent's two durable pull consumers, and reading
 * the log back in order. The only module besides identity.ts that imports the NATS client.
 */
import { readFileSync } from "node:fs";
import { connect, createInbox, credsAuthenticator, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { ErrorCode, MaxwellError } from "../protocol/errors.js";
import { Header, LOG_STREAM, consumers, subjects } from "../protocol/subjects.js";
import type { StoredEntry } from "../protocol/chain.js";

export type { JetStreamClient, JetStreamManager, Msg, MsgHdrs, NatsConnection, Subscription };
export { natsHeaders };

export interface ConnectOptions {
  servers: string;
  /** Path of a creds file, or its content. */
  creds: string | Uint8Array;
  name: string;
  /** Inbox prefix; an actor's must be its own (see subjects.inboxPrefix). */
  inboxPrefix?: string;
  /** Keep reconnecting forever (daemons) or fail fast (CLI). */
  reconnect?: boolean;
  timeoutMs?: number;
}

/** Connects with a creds file. A refused or unreachable server is an `unavailable` MaxwellError. */
export async function connectNats(opts: ConnectOptions): Promise<NatsConnection> {
  const creds = typeof opts.creds === "string" ? readFileSync(opts.creds) : opts.creds;
  try {
    return await connect({
      servers: opts.servers,
      authenticator: credsAuthenticator(creds),
      name: opts.name,
      inboxPrefix: opts.inboxPrefix,
      reconnect: opts.reconnect ?? true,
      maxReconnectAttempts: opts.reconnect === false ? 0 : -1,
      reconnectTimeWait: 250,
      timeout: opts.timeoutMs ?? 5000,
      pingInterval: 10_000,
      // Async stack traces cost a captured Error per request; the kernel makes one per append.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new MaxwellError(ErrorCode.Unavailable, `cannot connect to NATS at ${opts.servers} as ${opts.name}: ${(err as Error).message}`, { cause: err });
  }
}

/** The log stream: append-only (no delete, no purge, no rollup), file storage, deduplicated. */
export function logStreamConfig(): Partial<StreamConfig> & { name: string } {
  return {
    name: LOG_STREAM,
    subjects: [subjects.logAll()],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    max_msgs: -1,
    max_bytes: -1,
    max_age: 0,
    max_msg_size: 1024 * 1024,
    deny_delete: true,
    deny_purge: true,
    allow_rollup_hdrs: false,
    duplicate_window: 120 * 1_000_000_000,
    num_replicas: 1,
  };
}

/** Creates the log stream if it does not exist and checks that it is append-only if it does. */
export async function ensureLogStream(jsm: JetStreamManager, replicas = 1): Promise<void> {
  try {
    const info = await jsm.streams.info(LOG_STREAM);
    const c = info.config;
    if (!c.deny_delete || !c.deny_purge || c.allow_rollup_hdrs) {
      throw new MaxwellError(
        ErrorCode.Conflict,
        `stream ${LOG_STREAM} exists but is not append-only (deny_delete=${String(c.deny_delete)}, deny_purge=${String(c.deny_purge)}, allow_rollup_hdrs=${String(c.allow_rollup_hdrs)}); refusing to use it`,
      );
    }
  } catch (err) {
    if (err instanceof MaxwellError) throw err;
    if (!/stream not found/i.test((err as Error).message)) throw err;
    await jsm.streams.add({ ...logStreamConfig(), num_replicas: replicas });
  }
}

/** Creates an agent's durable consumers (inbox and replies) if missing. */
export async function ensureAgentConsumers(jsm: JetStreamManager, agent: string): Promise<void> {
  const specs = [
    { name: consumers.inbox(agent), filter: subjects.logInbox(agent) },
    { name: consumers.replies(agent), filter: subjects.logReplies(agent) },
  ];
  for (const spec of specs) {
    try {
      await jsm.consumers.info(LOG_STREAM, spec.name);
    } catch {
      await jsm.consumers.add(LOG_STREAM, {
        durable_name: spec.name,
        filter_subject: spec.filter,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        replay_policy: ReplayPolicy.Instant,
        // Short, so work held by a kernel that died is redelivered soon; long handlers send 'working'.
        ack_wait: 10 * 1_000_000_000,
        max_deliver: -1,
        max_ack_pending: 4096,
      });
    }
  }
}

export interface StreamTail {
  lastSeq: number;
  last?: StoredEntry;
}

/** The last sequence of the log stream and the entry stored there. */
export async function readTail(jsm: JetStreamManager): Promise<StreamTail> {
  const info = await jsm.streams.info(LOG_STREAM);
  const lastSeq = info.state.last_seq;
  if (lastSeq === 0 || info.state.messages === 0) return { lastSeq };
  const m = await jsm.streams.getMessage(LOG_STREAM, { seq: lastSeq });
  if (!m) return { lastSeq };
  return { lastSeq, last: { seq: m.seq, subject: m.subject, data: m.data } };
}

/** One entry read back from the log, with its headers. */
export interface ReadEntry extends StoredEntry {
  headers?: MsgHdrs;
}

/** Messages a bounded read asks the server to keep in flight. */
const BOUNDED_READ_BUFFER = 8192;
/** How long a bounded read waits for the next entry before it takes the log to end there. */
const BOUNDED_READ_QUIET_MS = 2000;

/**
 * Reads the log in order from `fromSeq`, optionally filtered to one subject, yielding entries
 * until the stream's last sequence at call time (or forever with `follow`).
 */
export async function* readLog(
  js: JetStreamClient,
  jsm: JetStreamManager,
  opts: { fromSeq?: number; filter?: string; follow?: boolean; signal?: AbortSignal } = {},
): AsyncGenerator<ReadEntry> {
  const info = await jsm.streams.info(LOG_STREAM);
  const endSeq = info.state.last_seq;
  const from = Math.max(1, opts.fromSeq ?? 1);
  if (!opts.follow && (endSeq === 0 || from > endSeq)) return;
  const consumer = await js.consumers.get(LOG_STREAM, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: from,
    ...(opts.filter ? { filter_subjects: opts.filter } : {}),
  });
  if (!opts.follow) {
    // Bounded read: one consume (the server keeps the buffer full, no round trip per batch) up to
    // the end. A log whose tail was lost on disk reports a last sequence it can no longer deliver,
    // so waiting for a message gives up after a quiet while (not while the caller is busy).
    const messages = await consumer.consume({ max_messages: BOUNDED_READ_BUFFER });
    let waitingSince = 0;
    const watchdog = setInterval(() => {
      if (waitingSince > 0 && Date.now() - waitingSince > BOUNDED_READ_QUIET_MS) void messages.close();
    }, BOUNDED_READ_QUIET_MS / 4);
    const iterator = messages[Symbol.asyncIterator]();
    try {
      for (;;) {
        waitingSince = Date.now();
        const next = await iterator.next();
        waitingSince = 0;
        if (next.done) return;
        yield entryOf(next.value);
        if (next.value.seq >= endSeq || opts.signal?.aborted) return;
      }
    } finally {
      clearInterval(watchdog);
      // close() settles only once the iterator has been returned.
      const closed = messages.close();
      await iterator.return?.();
      await closed;
    }
  }
  const messages = await consumer.consume({ max_messages: 1024 });
  const stop = (): void => {
    void messages.close();
  };
  opts.signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const m of messages) {
      yield entryOf(m);
    }
  } finally {
    opts.signal?.removeEventListener("abort", stop);
    await messages.close();
  }
}

/** An entry of a consumed message; its headers are parsed only if someone reads them. */
function entryOf(m: { seq: number; subject: string; data: Uint8Array; headers?: MsgHdrs }): ReadEntry {
  return {
    seq: m.seq,
    subject: m.subject,
    data: m.data,
    get headers() {
      return m.headers;
    },
  };
}

export { jetstream, jetstreamManager };

/** Where the stream stored a published entry. */
export interface PubAck {
  seq: number;
  /** True when the stream already held an entry with this msg id (nothing new was stored). */
  duplicate: boolean;
}

export interface LogPublishOptions {
  msgId: string;
  expectedLastSeq: number;
  traceparent?: string;
}

/** Called exactly once per publish: with the stream's ack, or with why there is none. */
export type PubAckCallback = (result: PubAck | Error) => void;

/** Publishes entries to the log, each with a dedupe id and an expected last sequence. */
export interface LogPublisher {
  /**
   * Publishes one entry. `done` gets the ack, or an Error when JetStream refused the entry, no
   * stream answered, no ack came within the timeout, or the publisher was closed. It is never
   * called synchronously from inside `publish`.
   */
  publish(subject: string, data: Uint8Array, opts: LogPublishOptions, done: PubAckCallback): void;
  close(): void;
}

/** Called exactly once per request: with the reply, or with why there is none. */
export type ReplyCallback = (reply: Msg | MaxwellError) => void;

/**
 * Requests over one reply subscription. A NATS client request sets up its own reply routing, a
 * timer and several promises, and builds an Error on every completion; at one request per
 * syscall or log append that is a large part of the work. Here every request names a reply
 * subject `<inbox>.<n>` under one wildcard subscription, replies are matched by `n`, and one
 * interval times out the oldest requests, which are always at the front of the
 * (insertion-ordered) map because every request has the same timeout.
 */
export class ReplyRouter {
  private readonly sub: Subscription;
  private readonly waiting = new Map<number, { subject: string; done: ReplyCallback; at: number }>();
  private next = 0;
  private readonly sweeper: NodeJS.Timeout;

  /** `inbox` must be a subject prefix this connection may subscribe under, unique to this router. */
  constructor(
    private readonly nc: NatsConnection,
    private readonly inbox: string,
    private readonly timeoutMs: number,
  ) {
    this.sub = nc.subscribe(`${inbox}.*`, { callback: (err, msg) => this.onReply(err, msg) });
    this.sweeper = setInterval(() => this.expire(), Math.max(10, Math.min(500, timeoutMs / 10)));
    this.sweeper.unref();
  }

  /**
   * Publishes a request. `done` gets the reply, or a MaxwellError: `unavailable` when nobody is
   * subscribed to `subject` (or the publish failed, or the router was closed), `timeout` when no
   * reply came in time. It is never called from inside `request`.
   */
  request(subject: string, data: Uint8Array, headers: MsgHdrs | undefined, done: ReplyCallback): void {
    const token = ++this.next;
    this.waiting.set(token, { subject, done, at: performance.now() });
    try {
      this.nc.publish(subject, data, headers ? { reply: `${this.inbox}.${token}`, headers } : { reply: `${this.inbox}.${token}` });
    } catch (err) {
      this.waiting.delete(token);
      queueMicrotask(() => done(new MaxwellError(ErrorCode.Unavailable, `cannot publish on ${subject}: ${(err as Error).message}`, { cause: err })));
    }
  }

  /** Like {@link request}, as a promise of the reply's bytes. */
  requestData(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.request(subject, data, headers, (reply) => (reply instanceof MaxwellError ? reject(reply) : resolve(reply.data)));
    });
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    this.failAll(new MaxwellError(ErrorCode.Unavailable, "the connection's request router is closed"));
  }

  private onReply(err: Error | null, msg: Msg): void {
    if (err) {
      // The subscription itself failed (e.g. a permissions error): nothing will be answered.
      this.failAll(new MaxwellError(ErrorCode.Unavailable, `reply subscription failed: ${err.message}`, { cause: err }));
      return;
    }
    const token = Number(msg.subject.slice(this.inbox.length + 1));
    const waiter = this.waiting.get(token);
    if (!waiter) return; // timed out already
    this.waiting.delete(token);
    const noResponders = msg.data.length === 0 && msg.headers?.code === 503;
    try {
      waiter.done(noResponders ? new MaxwellError(ErrorCode.Unavailable, `no answer on ${waiter.subject}: no responders`) : msg);
    } catch (err) {
      // Thrown here it would end the client's read loop and the connection would hang silently;
      // rethrown outside it, it is an uncaught exception that stops the process, as it should.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  private expire(): void {
    const before = performance.now() - this.timeoutMs;
    for (const [token, waiter] of this.waiting) {
      if (waiter.at > before) break;
      this.waiting.delete(token);
      waiter.done(new MaxwellError(ErrorCode.Timeout, `no answer on ${waiter.subject}: timeout after ${this.timeoutMs} ms`));
    }
  }

  private failAll(err: MaxwellError): void {
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiters) w.done(err);
  }
}

/** A {@link ReplyRouter} on its own inbox under `inboxPrefix` (the connection's, for an agent). */
export function replyRouter(nc: NatsConnection, inboxPrefix: string, timeoutMs: number): ReplyRouter {
  const router = new ReplyRouter(nc, createInbox(inboxPrefix), timeoutMs);
  void nc.closed().then(() => router.close());
  return router;
}

const ackDecoder = new TextDecoder();

/** The kernel's log publisher: JetStream publishes over one {@link ReplyRouter}. */
class RoutedLogPublisher implements LogPublisher {
  private readonly router: ReplyRouter;

  constructor(nc: NatsConnection, timeoutMs: number) {
    this.router = new ReplyRouter(nc, createInbox(), timeoutMs);
  }

  publish(subject: string, data: Uint8Array, opts: LogPublishOptions, done: PubAckCallback): void {
    const h = natsHeaders();
    h.set(Header.MsgId, opts.msgId);
    h.set(Header.ExpectedLastSeq, String(opts.expectedLastSeq));
    if (opts.traceparent) h.set(Header.TraceParent, opts.traceparent);
    this.router.request(subject, data, h, (reply) => done(reply instanceof MaxwellError ? reply : parsePubAck(reply)));
  }

  close(): void {
    this.router.close();
  }
}

/** Reads JetStream's answer to a publish: `{stream, seq, duplicate?}` or `{error}`; a bodiless status is an error. */
function parsePubAck(msg: Msg): PubAck | Error {
  if (msg.data.length === 0) {
    return new MaxwellError(ErrorCode.Unavailable, `log publish answered with status ${msg.headers?.code ?? "?"} ${msg.headers?.description ?? ""}`.trim());
  }
  let ack: { stream?: unknown; seq?: unknown; duplicate?: unknown; error?: { description?: unknown; err_code?: unknown } };
  try {
    ack = JSON.parse(ackDecoder.decode(msg.data)) as typeof ack;
  } catch (err) {
    return new MaxwellError(ErrorCode.Internal, "log publish ack is not JSON", { cause: err });
  }
  if (ack.error) return new MaxwellError(ErrorCode.Conflict, `log publish refused: ${String(ack.error.description)} (${String(ack.error.err_code)})`);
  if (typeof ack.seq !== "number" || typeof ack.stream !== "string" || ack.stream === "") return new MaxwellError(ErrorCode.Internal, "log publish ack has no stream sequence");
  return { seq: ack.seq, duplicate: ack.duplicate === true };
}

/** The kernel's publisher of log entries; acks that do not come within `timeoutMs` are errors. */
export function logPublisher(nc: NatsConnection, timeoutMs = 5000): LogPublisher {
  return new RoutedLogPublisher(nc, timeoutMs);
}

/** Reads the entries stored from `fromSeq` to `toSeq` inclusive (direct gets; for short ranges). */
export async function readRange(jsm: JetStreamManager, fromSeq: number, toSeq: number): Promise<StoredEntry[]> {
  const out: StoredEntry[] = [];
  for (let seq = fromSeq; seq <= toSeq; seq++) {
    const m = await jsm.streams.getMessage(LOG_STREAM, { seq });
    if (m) out.push({ seq: m.seq, subject: m.subject, data: m.data });
  }
  return out;
}

/** How many direct gets {@link readEntriesAt} keeps in flight. */
const READ_AT_IN_FLIGHT = 64;

/**
 * Reads the entries stored at `seqs` (direct gets, pipelined), in ascending sequence order;
 * sequences the stream does not hold are left out. For scattered sequences (one trace's events).
 */
export async function readEntriesAt(jsm: JetStreamManager, seqs: readonly number[]): Promise<StoredEntry[]> {
  const wanted = [...new Set(seqs)].filter((s) => Number.isInteger(s) && s >= 1).sort((a, b) => a - b);
  const found: Array<StoredEntry | undefined> = new Array<StoredEntry | undefined>(wanted.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < wanted.length) {
      const i = next++;
      const m = await jsm.streams.getMessage(LOG_STREAM, { seq: wanted[i] as number });
      if (m) found[i] = { seq: m.seq, subject: m.subject, data: m.data };
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_AT_IN_FLIGHT, wanted.length) }, worker));
  return found.filter((e): e is StoredEntry => e !== undefined);
}

/** One message from a durable consumer (a JetStream message satisfies this as it is). */
export interface DurableMessage {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly redelivered: boolean;
  readonly headers?: MsgHdrs;
  ack(): void;
  nak(delayMs?: number): void;
  working(): void;
}

export interface DurableSubscription {
  close(): Promise<void>;
  /** Resolves when the subscription ends: with the error that ended it, if one did. */
  closed(): Promise<void | Error>;
}

/**
 * Pulls from an existing durable consumer of the log, calling `onMessage` for each message as it
 * is parsed (no iterator, no per-message promise). `onMessage` must not throw.
 */
export async function consumeDurable(nc: NatsConnection, consumer: string, maxMessages: number, onMessage: (m: DurableMessage) => void): Promise<DurableSubscription> {
  const js = jetstream(nc);
  const c = await js.consumers.get(LOG_STREAM, consumer);
  const messages = await c.consume({ max_messages: maxMessages, callback: onMessage });
  return {
    async close() {
      await messages.close();
    },
    closed: () => messages.closed(),
  };
}

/** Sends a request and returns the raw reply bytes; `no responders` and timeouts are `unavailable`. */
export async function requestRaw(
  nc: NatsConnection,
  subject: string,
  data: Uint8Array,
  opts: { timeoutMs: number; traceparent?: string },
): Promise<Uint8Array> {
  const h = opts.traceparent ? natsHeaders() : undefined;
  if (h && opts.traceparent) h.set("traceparent", opts.traceparent);
  try {
    const m = await nc.request(subject, data, { timeout: opts.timeoutMs, ...(h ? { headers: h } : {}) });
    return m.data;
  } catch (err) {
    const text = (err as Error).message ?? String(err);
    const code = /timeout/i.test(text) ? ErrorCode.Timeout : ErrorCode.Unavailable;
    throw new MaxwellError(code, `no answer on ${subject}: ${text}`, { cause: err });
  }
}
