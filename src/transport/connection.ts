/**
 * Connecting to NATS with a creds file, and the JetStream objects Maxwell uses: the log stream
 * (append-only, deduplicated, file storage), each agent's two durable pull consumers, and reading
 * the log back in order. The only module besides identity.ts that imports the NATS client.
 */
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
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
import { LOG_STREAM, consumers, subjects } from "../protocol/subjects.js";
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
    // Bounded read: fetch in batches and stop at the end, or at the first empty batch (a log whose
    // tail was lost on disk reports a last sequence it can no longer deliver).
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 1024, expires: 2000 });
      let got = 0;
      let last = 0;
      for await (const m of batch) {
        got += 1;
        last = m.seq;
        yield { seq: m.seq, subject: m.subject, data: m.data, headers: m.headers };
        if (m.seq >= endSeq) break;
      }
      if (got === 0 || last >= endSeq || opts.signal?.aborted) return;
    }
  }
  const messages = await consumer.consume({ max_messages: 1024 });
  const stop = (): void => {
    void messages.close();
  };
  opts.signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const m of messages) {
      yield { seq: m.seq, subject: m.subject, data: m.data, headers: m.headers };
    }
  } finally {
    opts.signal?.removeEventListener("abort", stop);
    await messages.close();
  }
}

export { jetstream, jetstreamManager };

/** Publishes one entry to the log with an expected last sequence and a dedupe id. */
export interface LogPublisher {
  (subject: string, data: Uint8Array, opts: { msgId: string; expectedLastSeq: number; traceparent?: string }): Promise<{ seq: number; duplicate: boolean }>;
}

export function logPublisher(js: JetStreamClient): LogPublisher {
  return async (subject, data, opts) => {
    const h = natsHeaders();
    if (opts.traceparent) h.set("traceparent", opts.traceparent);
    const ack = await js.publish(subject, data, {
      msgID: opts.msgId,
      expect: { lastSequence: opts.expectedLastSeq },
      headers: h,
      timeout: 5000,
    });
    return { seq: ack.seq, duplicate: ack.duplicate };
  };
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

/** One message from a durable consumer, as the SDK sees it. */
export interface DurableMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
  redelivered: boolean;
  headers?: MsgHdrs;
  ack(): void;
  nak(delayMs?: number): void;
  working(): void;
}

export interface DurableSubscription extends AsyncIterable<DurableMessage> {
  close(): Promise<void>;
}

/** Pulls from an existing durable consumer of the log (an agent may not create consumers). */
export async function consumeDurable(nc: NatsConnection, consumer: string, maxMessages = 256): Promise<DurableSubscription> {
  const js = jetstream(nc);
  const c = await js.consumers.get(LOG_STREAM, consumer);
  const messages = await c.consume({ max_messages: maxMessages });
  return {
    async *[Symbol.asyncIterator]() {
      for await (const m of messages) {
        yield {
          seq: m.seq,
          subject: m.subject,
          data: m.data,
          redelivered: m.redelivered,
          headers: m.headers,
          ack: () => m.ack(),
          nak: (delayMs?: number) => m.nak(delayMs),
          working: () => m.working(),
        };
      }
    },
    async close() {
      await messages.close();
    },
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
