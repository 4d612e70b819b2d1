/**
 * Delivery: the kernel hands every event addressed to an agent to that agent over core NATS, on
 * the agent's own subject, as the exact bytes stored in the log. Agents hold no JetStream
 * permission (see identity.ts for why). Each agent's two durable consumers (its inbox and its
 * replies) stay the record of what is still owed to it.
 *
 * An event is handed over only once the kernel's own state holds it, so an agent can never act
 * on an event the kernel does not know yet. Usually that is the moment the appender completes it
 * (`stored`): the kernel has the bytes then, so it hands them over at once instead of waiting
 * for the consumer to bring the same entry back. The JetStream message that follows is only
 * recorded; it stays unacknowledged until the agent acks the sequence (an ack that comes first
 * is remembered and applied when it arrives). Events the consumer brings that were not handed
 * over at store time (redeliveries, and everything after a kernel restart) are handed over from
 * the consumer, as soon as the state holds them. A crashed agent's work is redelivered by
 * JetStream and sent again when the agent says it (re)started.
 *
 * First deliveries on each consumer stay in log order: once an event of a consumer is left to
 * the consumer path (too many handed over and not yet seen from JetStream), later events of
 * that consumer take the same path until the consumer has caught up.
 */
import { Header, consumers, subjects } from "../../src/protocol/mod.js";
import { consumeDurable, natsHeaders, type DurableMessage, type DurableSubscription, type NatsConnection } from "../../src/transport/connection.js";
import type { Logger } from "../../src/runtime/logger.js";

/**
 * Events per agent handed over at store time whose JetStream message has not arrived yet. The
 * consumers' max_ack_pending: beyond it JetStream itself holds deliveries back.
 */
const MAX_EARLY = 4096;
/** Messages each consumer pull asks for. */
const PULL_BATCH = 1024;

/** An event handed over at store time, waiting for its JetStream message. */
interface EarlyDelivery {
  data: Uint8Array;
  traceparent: string | undefined;
  /** The agent acked (or nak'ed) it before the JetStream message arrived. */
  answer: "ack" | "nak" | undefined;
}

/** One of an agent's two consumers, for ordering first deliveries. */
interface Lane {
  /** Highest seq left to the consumer path whose JetStream message has not arrived (0: none). */
  deferredUpTo: number;
}

interface AgentDeliveries {
  subs: DurableSubscription[];
  /** Unacknowledged JetStream messages by stream sequence. */
  pending: Map<number, DurableMessage>;
  early: Map<number, EarlyDelivery>;
}

export class Deliverer {
  private readonly agents = new Map<string, AgentDeliveries>();
  /** Log subject → the agent and consumer lane whose deliveries it carries. */
  private readonly lanes = new Map<string, { agent: string; entry: AgentDeliveries; lane: Lane }>();
  /** JetStream messages the state does not hold yet, oldest first. */
  private waiting: Array<{ agent: string; m: DurableMessage }> = [];
  private stopped = false;
  /** Agents an operator paused: nothing is handed to them; their deliveries stay owed. */
  private readonly paused = new Set<string>();

  constructor(
    private readonly nc: Pick<NatsConnection, "publish">,
    private readonly stateSeq: () => number,
    private readonly log: Logger,
    /** How a durable consumer is read; tests substitute their own. */
    private readonly consume: (consumer: string, batch: number, onMessage: (m: DurableMessage) => void) => Promise<DurableSubscription> = (consumer, batch, onMessage) =>
      consumeDurable(nc as NatsConnection, consumer, batch, onMessage),
  ) {}

  /** Starts delivering to `agent` (idempotent). */
  async add(agent: string): Promise<void> {
    if (this.agents.has(agent) || this.stopped) return;
    const entry: AgentDeliveries = { subs: [], pending: new Map(), early: new Map() };
    this.agents.set(agent, entry);
    const specs = [
      { consumer: consumers.inbox(agent), subject: subjects.logInbox(agent), lane: { deferredUpTo: 0 } },
      { consumer: consumers.replies(agent), subject: subjects.logReplies(agent), lane: { deferredUpTo: 0 } },
    ];
    // Both lanes exist before the first await, so no event stored meanwhile misses its hand-off.
    for (const { subject, lane } of specs) this.lanes.set(subject, { agent, entry, lane });
    for (const { consumer, lane } of specs) {
      const sub = await this.consume(consumer, PULL_BATCH, (m) => this.fromConsumer(agent, entry, lane, m));
      entry.subs.push(sub);
      void sub.closed().then((err) => {
        if (err && !this.stopped) this.log.error({ agent, consumer, err: String(err) }, "delivery consumer failed");
      });
    }
  }

  /**
   * Called for every event right after it entered the state, in log order: hands over what was
   * waiting for it, and the event itself when it is a delivery to an agent.
   */
  stored(seq: number, subject: string, data: Uint8Array, traceparent: string | undefined): void {
    if (this.waiting.length > 0) this.advance(seq);
    const target = this.lanes.get(subject);
    if (!target) return;
    const { agent, entry, lane } = target;
    if (entry.pending.has(seq)) return; // its JetStream message came first and was handed over from there
    if (lane.deferredUpTo !== 0 || entry.early.size >= MAX_EARLY) {
      lane.deferredUpTo = seq;
      return;
    }
    entry.early.set(seq, { data, traceparent, answer: undefined });
    this.publish(agent, data, traceparent, false);
  }

  private fromConsumer(agent: string, entry: AgentDeliveries, lane: Lane, m: DurableMessage): void {
    try {
      const early = entry.early.get(m.seq);
      if (early) {
        entry.early.delete(m.seq);
        if (early.answer === "ack") m.ack();
        else if (early.answer === "nak") m.nak(1000);
        else {
          entry.pending.set(m.seq, m);
          // Handed over at store time; a redelivery (another kernel handed it before) goes again.
          if (m.redelivered) this.hand(agent, m);
        }
        return;
      }
      entry.pending.set(m.seq, m);
      if (lane.deferredUpTo !== 0 && m.seq >= lane.deferredUpTo) lane.deferredUpTo = 0;
      if (m.seq <= this.stateSeq()) this.hand(agent, m);
      else this.waiting.push({ agent, m });
    } catch (err) {
      // A throw here would stop the consumer; the message stays unacked and comes back.
      this.log.error({ agent, seq: m.seq, err: String(err) }, "could not hand over a delivery");
    }
  }

  /** Hands over the JetStream messages that were waiting for the state to reach `seq`. */
  private advance(seq: number): void {
    const ready = this.waiting.filter((w) => w.m.seq <= seq);
    if (ready.length === 0) return;
    this.waiting = this.waiting.filter((w) => w.m.seq > seq);
    for (const w of ready) this.hand(w.agent, w.m);
  }

  private hand(agent: string, m: DurableMessage, again = false): void {
    // The trace context travels on every hop: forward the one stored with the event.
    this.publish(agent, m.data, m.headers?.get(Header.TraceParent) || undefined, m.redelivered || again);
  }

  /** Pauses or resumes hand-overs to `agent`; on resume, everything still owed is handed over. */
  setPaused(agent: string, paused: boolean): void {
    if (paused) {
      this.paused.add(agent);
      return;
    }
    if (!this.paused.delete(agent)) return;
    const entry = this.agents.get(agent);
    if (entry) this.resend(agent, entry);
  }

  private publish(agent: string, data: Uint8Array, traceparent: string | undefined, redelivered: boolean): void {
    if (this.paused.has(agent)) return;
    if (!traceparent && !redelivered) {
      this.nc.publish(subjects.delivery(agent), data);
      return;
    }
    const h = natsHeaders();
    if (traceparent) h.set(Header.TraceParent, traceparent);
    if (redelivered) h.set(Header.Redelivered, "1");
    this.nc.publish(subjects.delivery(agent), data, { headers: h });
  }

  /** Applies an agent's ack message. Only that agent's own deliveries are touched. */
  ack(agent: string, req: { ack?: number[]; working?: number[]; nak?: number[]; resend?: boolean }): void {
    const entry = this.agents.get(agent);
    if (!entry) return;
    if (req.ack) {
      for (const seq of req.ack) {
        const m = entry.pending.get(seq);
        if (m) {
          entry.pending.delete(seq);
          m.ack();
        } else {
          const early = entry.early.get(seq);
          if (early) early.answer = "ack";
        }
      }
    }
    if (req.working) for (const seq of req.working) entry.pending.get(seq)?.working();
    if (req.nak) {
      for (const seq of req.nak) {
        const m = entry.pending.get(seq);
        if (m) {
          entry.pending.delete(seq);
          m.nak(1000);
        } else {
          const early = entry.early.get(seq);
          if (early && early.answer === undefined) early.answer = "nak";
        }
      }
    }
    if (req.resend) this.resend(agent, entry);
  }

  /** Hands over again, in sequence order, everything held unacknowledged for `agent`. */
  private resend(agent: string, entry: AgentDeliveries): void {
    const head = this.stateSeq();
    const again: Array<{ seq: number; send: () => void }> = [];
    for (const m of entry.pending.values()) if (m.seq <= head) again.push({ seq: m.seq, send: () => this.hand(agent, m, true) });
    for (const [seq, early] of entry.early) {
      if (early.answer === undefined) again.push({ seq, send: () => this.publish(agent, early.data, early.traceparent, true) });
    }
    again.sort((a, b) => a.seq - b.seq);
    for (const a of again) a.send();
  }

  /** Unacknowledged deliveries held for `agent` (for status). */
  pendingCount(agent: string): number {
    const entry = this.agents.get(agent);
    return entry ? entry.pending.size + entry.early.size : 0;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.agents.values()].flatMap((a) => a.subs.map((s) => s.close())));
  }
}
