/**
 * Delivery: the kernel reads each agent's two durable consumers (its inbox and its replies) and
 * hands every event to the agent over core NATS, on the agent's own subject, as the exact bytes
 * stored in the log. Agents hold no JetStream permission (see identity.ts for why).
 *
 * An event is handed over only once the kernel's own state holds it (its sequence is at or
 * below the state's head), so an agent can never act on an event the kernel does not know yet.
 * The JetStream message stays unacknowledged until the agent acks it by sequence; a crashed
 * agent's work is redelivered by JetStream and sent again when the agent says it (re)started.
 */
import { Header, consumers, subjects } from "../../src/protocol/mod.js";
import { consumeDurable, natsHeaders, type DurableMessage, type DurableSubscription, type NatsConnection } from "../../src/transport/connection.js";
import type { Logger } from "../../src/runtime/logger.js";

interface AgentDeliveries {
  subs: DurableSubscription[];
  /** Unacknowledged deliveries by stream sequence. */
  pending: Map<number, DurableMessage>;
}

export class Deliverer {
  private readonly agents = new Map<string, AgentDeliveries>();
  /** Deliveries the state does not hold yet, oldest first. */
  private waiting: Array<{ agent: string; m: DurableMessage }> = [];
  private stopped = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly stateSeq: () => number,
    private readonly log: Logger,
  ) {}

  /** Starts delivering to `agent` (idempotent). */
  async add(agent: string): Promise<void> {
    if (this.agents.has(agent) || this.stopped) return;
    const entry: AgentDeliveries = { subs: [], pending: new Map() };
    this.agents.set(agent, entry);
    for (const name of [consumers.inbox(agent), consumers.replies(agent)]) {
      const sub = await consumeDurable(this.nc, name, 1024);
      entry.subs.push(sub);
      void this.pump(agent, entry, sub);
    }
  }

  private async pump(agent: string, entry: AgentDeliveries, sub: DurableSubscription): Promise<void> {
    try {
      for await (const m of sub) {
        entry.pending.set(m.seq, m);
        if (m.seq <= this.stateSeq()) this.hand(agent, m);
        else this.waiting.push({ agent, m });
      }
    } catch (err) {
      if (!this.stopped) this.log.error({ agent, err: String(err) }, "delivery consumer failed");
    }
  }

  /** Called after each event enters the state: hands over what was waiting for it. */
  advance(seq: number): void {
    if (this.waiting.length === 0) return;
    const ready = this.waiting.filter((w) => w.m.seq <= seq);
    if (ready.length === 0) return;
    this.waiting = this.waiting.filter((w) => w.m.seq > seq);
    for (const w of ready) this.hand(w.agent, w.m);
  }

  private hand(agent: string, m: DurableMessage, again = false): void {
    // The trace context travels on every hop: forward the one stored with the event.
    const traceparent = m.headers?.get(Header.TraceParent);
    if (!traceparent && !m.redelivered && !again) {
      this.nc.publish(subjects.delivery(agent), m.data);
      return;
    }
    const h = natsHeaders();
    if (traceparent) h.set(Header.TraceParent, traceparent);
    if (m.redelivered || again) h.set(Header.Redelivered, "1");
    this.nc.publish(subjects.delivery(agent), m.data, { headers: h });
  }

  /** Applies an agent's ack message. Only that agent's own pending deliveries are touched. */
  ack(agent: string, req: { ack?: number[]; working?: number[]; nak?: number[]; resend?: boolean }): void {
    const entry = this.agents.get(agent);
    if (!entry) return;
    for (const seq of req.ack ?? []) {
      const m = entry.pending.get(seq);
      if (!m) continue;
      entry.pending.delete(seq);
      m.ack();
    }
    for (const seq of req.working ?? []) entry.pending.get(seq)?.working();
    for (const seq of req.nak ?? []) {
      const m = entry.pending.get(seq);
      if (!m) continue;
      entry.pending.delete(seq);
      m.nak(1000);
    }
    if (req.resend) {
      const head = this.stateSeq();
      for (const m of [...entry.pending.values()].sort((a, b) => a.seq - b.seq)) if (m.seq <= head) this.hand(agent, m, true);
    }
  }

  /** Unacknowledged deliveries held for `agent` (for status). */
  pendingCount(agent: string): number {
    return this.agents.get(agent)?.pending.size ?? 0;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.agents.values()].flatMap((a) => a.subs.map((s) => s.close())));
  }
}
