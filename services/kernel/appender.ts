/**
 * The kernel's append path: the only writer of the log. Assigns each event its place in the hash
 * chain (seq, prev), publishes with pipelining, and completes events strictly in chain order.
 *
 * Every publish carries Nats-Expected-Last-Sequence = its predecessor's seq. If one fails, all
 * later in-flight ones fail too; the appender waits for them to settle, re-reads the stream tail,
 * recognizes which of its events were stored (by event id) and re-chains the rest. So the chain
 * never has a gap, and a second writer is fenced off instead of forking the chain.
 */
import { encode, entryHash, decodeMap, type LogEvent, type PendingEvent, GENESIS_PREV } from "../../src/protocol/mod.js";
import type { StoredEntry } from "../../src/protocol/mod.js";
import type { LogPublisher, PubAck } from "../../src/transport/connection.js";

export interface ChainHead {
  seq: number;
  hash: string;
}

interface Item {
  subject: string;
  build: (seq: number, prev: string) => PendingEvent | LogEvent;
  msgId: string;
  traceparent: string | undefined;
  resolve: (e: LogEvent) => void;
  reject: (err: unknown) => void;
  // Set when assigned:
  seq?: number;
  event?: LogEvent;
  hash?: string;
  data?: Uint8Array;
  /** Where JetStream says an entry with this msg id already is (a duplicate). */
  duplicateOf?: number;
  state: "queued" | "inflight" | "stored" | "failed";
}

export interface AppenderOptions {
  publish: LogPublisher;
  /** Reads the stream tail and the entries after a given seq, for resync. */
  readTail: () => Promise<{ lastSeq: number; last?: StoredEntry }>;
  readRange: (fromSeq: number, toSeq: number) => Promise<StoredEntry[]>;
  head: ChainHead;
  /**
   * Called for every stored event, in chain order, before its append resolves, with its exact
   * stored bytes and the traceparent stored with it.
   */
  onStored: (event: LogEvent, subject: string, hash: string, data: Uint8Array, traceparent: string | undefined) => void;
  maxInFlight?: number;
  onError?: (err: unknown) => void;
}

export class Appender {
  private head: ChainHead;
  private readonly queue: Item[] = [];
  private readonly inflight: Item[] = [];
  private resyncing = false;
  private closed = false;
  private readonly maxInFlight: number;
  private retryDelay = 0;
  private idle: Array<() => void> = [];
  /** In-flight items with no answer yet, and items that failed: kept as counts, checked per ack. */
  private unanswered = 0;
  private failures = 0;

  constructor(private readonly opts: AppenderOptions) {
    this.head = opts.head;
    this.maxInFlight = opts.maxInFlight ?? 256;
  }

  /** The chain head as assigned so far (including events still in flight). */
  get assignedHead(): ChainHead {
    return this.head;
  }

  /**
   * Appends an event. `build` receives the event's seq and prev hash and returns the event;
   * it may be called again if the event has to be re-chained after a failure.
   */
  append(subject: string, msgId: string, build: Item["build"], traceparent?: string): Promise<LogEvent> {
    if (this.closed) return Promise.reject(new Error("log appender is closed"));
    return new Promise<LogEvent>((resolve, reject) => {
      this.queue.push({ subject, build, msgId, traceparent, resolve, reject, state: "queued" });
      this.pump();
    });
  }

  /** Resolves when nothing is queued or in flight. */
  async drain(): Promise<void> {
    if (this.queue.length === 0 && this.inflight.length === 0) return;
    await new Promise<void>((resolve) => this.idle.push(resolve));
  }

  close(): void {
    this.closed = true;
    this.opts.publish.close();
    for (const item of this.queue.splice(0)) item.reject(new Error("log appender is closed"));
  }

  private pump(): void {
    while (!this.resyncing && this.inflight.length < this.maxInFlight && this.queue.length > 0) {
      const item = this.queue.shift() as Item;
      const seq = this.head.seq + 1;
      const prev = this.head.hash;
      // The built event is completed in place (no copy): `build` returns a fresh object or the same
      // one again on a re-chain, and seq and prev are overwritten either way.
      const event = item.build(seq, prev) as LogEvent;
      event.seq = seq;
      event.prev = prev;
      const data = encode(event);
      const hash = entryHash(item.subject, data);
      item.seq = seq;
      item.event = event;
      item.hash = hash;
      item.data = data;
      item.state = "inflight";
      this.inflight.push(item);
      this.unanswered += 1;
      this.head = { seq, hash };
      this.opts.publish.publish(item.subject, data, { msgId: item.msgId, expectedLastSeq: seq - 1, traceparent: item.traceparent }, (result) => this.onAck(item, result));
    }
    this.notifyIdle();
  }

  private onAck(item: Item, result: PubAck | Error): void {
    this.unanswered -= 1;
    if (result instanceof Error) {
      item.state = "failed";
      this.opts.onError?.(result);
    } else {
      item.state = result.seq === item.seq && !result.duplicate ? "stored" : "failed";
      if (result.duplicate) item.duplicateOf = result.seq;
    }
    if (item.state === "failed") this.failures += 1;
    this.settle();
  }

  private settle(): void {
    while (this.inflight.length > 0 && this.inflight[0]?.state === "stored") {
      const item = this.inflight.shift() as Item;
      this.complete(item, item.event as LogEvent, item.hash as string, item.data as Uint8Array);
    }
    if (this.failures > 0) this.resyncing = true;
    if (this.resyncing && this.unanswered === 0) {
      void this.resync();
      return;
    }
    this.pump();
  }

  private complete(item: Item, event: LogEvent, hash: string, data: Uint8Array): void {
    // Resolving only queues the awaiting code: it runs after onStored all the same. Resolving
    // first puts it ahead of the connection's flush, which the deliveries onStored publishes
    // queue, so the syscall's answer leaves in the same write as those deliveries.
    item.resolve(event);
    this.opts.onStored(event, item.subject, hash, data, item.traceparent);
  }

  private async resync(): Promise<void> {
    const failed = this.inflight.splice(0);
    this.failures = 0;
    if (this.retryDelay > 0) await new Promise((r) => setTimeout(r, this.retryDelay));
    this.retryDelay = Math.min(Math.max(this.retryDelay * 2, 50), 2000);
    let tail: { lastSeq: number; last?: StoredEntry };
    try {
      tail = await this.opts.readTail();
      const firstSeq = failed[0]?.seq ?? tail.lastSeq + 1;
      const stored = firstSeq <= tail.lastSeq ? await this.opts.readRange(firstSeq, tail.lastSeq) : [];
      const byId = new Map<string, StoredEntry>();
      for (const entry of stored) {
        const id = decodeMap(entry.data)["id"];
        if (typeof id === "string") byId.set(id, entry);
      }
      const requeue: Item[] = [];
      for (const item of failed) {
        const entry = item.event ? byId.get(item.event.id) : undefined;
        if (entry) this.complete(item, decodeMap(entry.data) as unknown as LogEvent, entryHash(entry.subject, entry.data), entry.data);
        else if (item.duplicateOf !== undefined) {
          // Already in the log under this msg id (an earlier attempt): answer with what is stored.
          const [original] = await this.opts.readRange(item.duplicateOf, item.duplicateOf);
          if (original) item.resolve(decodeMap(original.data) as unknown as LogEvent);
          else item.reject(new Error(`JetStream reported a duplicate at seq ${item.duplicateOf}, which cannot be read`));
        } else {
          item.state = "queued";
          requeue.push(item);
        }
      }
      this.queue.unshift(...requeue);
      this.head = tail.last ? { seq: tail.lastSeq, hash: entryHash(tail.last.subject, tail.last.data) } : { seq: 0, hash: GENESIS_PREV };
      this.retryDelay = requeue.length > 0 ? this.retryDelay : 0;
    } catch (err) {
      this.opts.onError?.(err);
      for (const item of failed) item.state = "queued";
      this.queue.unshift(...failed);
    }
    this.resyncing = false;
    this.pump();
  }

  private notifyIdle(): void {
    if (this.queue.length === 0 && this.inflight.length === 0 && this.idle.length > 0) {
      for (const resolve of this.idle.splice(0)) resolve();
    }
  }
}
