/**
 * The kernel's delivery rules, with the consumer and the NATS publish replaced by recorders:
 * an agent is never handed an event the kernel's state does not hold, acks only touch the acking
 * agent's own deliveries, and resend hands back everything still owed, in log order.
 */
import { describe, expect, it } from "vitest";
import { subjects, consumers } from "../../src/protocol/mod.js";
import type { DurableMessage, DurableSubscription } from "../../src/transport/connection.js";
import { createLogger } from "../../src/runtime/logger.js";
import { Deliverer } from "../../services/kernel/deliverer.js";

interface FakeMessage extends DurableMessage {
  acked: boolean;
  naked: boolean;
}

function setup() {
  let head = 0;
  const published: Array<{ subject: string; seq: number; redelivered: boolean }> = [];
  const nc = {
    publish(subject: string, data?: Uint8Array, opts?: { headers?: { has(k: string): boolean } }) {
      published.push({ subject, seq: (data as Uint8Array)[0] as number, redelivered: opts?.headers?.has("Mx-Redelivered") ?? false });
    },
  };
  const feeds = new Map<string, (m: DurableMessage) => void>();
  const consume = async (consumer: string, _batch: number, onMessage: (m: DurableMessage) => void): Promise<DurableSubscription> => {
    feeds.set(consumer, onMessage);
    return { close: async () => undefined, closed: () => new Promise<void>(() => undefined) };
  };
  const deliverer = new Deliverer(nc as never, () => head, createLogger("test", "silent"), consume);
  /** A JetStream message whose payload's first byte is its seq, so publishes can be identified. */
  const message = (seq: number, subject: string, redelivered = false): FakeMessage => {
    const m: FakeMessage = {
      seq,
      subject,
      data: Uint8Array.of(seq),
      redelivered,
      acked: false,
      naked: false,
      ack: () => void (m.acked = true),
      nak: () => void (m.naked = true),
      working: () => undefined,
    };
    return m;
  };
  const fromConsumer = (consumer: string, m: DurableMessage): void => (feeds.get(consumer) as (m: DurableMessage) => void)(m);
  return {
    deliverer,
    published,
    message,
    fromConsumer,
    setHead: (seq: number) => void (head = seq),
    /** The kernel stored `seq` on `subject` and its state now holds it. */
    store(seq: number, subject: string) {
      head = seq;
      deliverer.stored(seq, subject, Uint8Array.of(seq), undefined);
    },
  };
}

describe("deliverer", () => {
  it("does not hand over an event the kernel's state does not hold yet, and hands it over once it does", async () => {
    const t = setup();
    await t.deliverer.add("a");
    t.setHead(4);
    // JetStream brings seq 5 before the appender has completed it (the race the guard exists for).
    t.fromConsumer(consumers.inbox("a"), t.message(5, subjects.logInbox("a")));
    expect(t.published).toEqual([]);
    t.store(5, subjects.logInbox("a"));
    expect(t.published).toEqual([{ subject: subjects.delivery("a"), seq: 5, redelivered: false }]);
  });

  it("hands over an event at store time, once, and acks its JetStream message only when the agent acks", async () => {
    const t = setup();
    await t.deliverer.add("a");
    t.store(1, subjects.logInbox("a"));
    expect(t.published.map((p) => p.seq)).toEqual([1]);
    const m = t.message(1, subjects.logInbox("a"));
    t.fromConsumer(consumers.inbox("a"), m);
    expect(t.published.map((p) => p.seq)).toEqual([1]);
    expect(m.acked).toBe(false);
    t.deliverer.ack("a", { ack: [1] });
    expect(m.acked).toBe(true);
  });

  it("applies an ack that arrives before the JetStream message when the message comes", async () => {
    const t = setup();
    await t.deliverer.add("a");
    t.store(1, subjects.logInbox("a"));
    t.deliverer.ack("a", { ack: [1] });
    const m = t.message(1, subjects.logInbox("a"));
    t.fromConsumer(consumers.inbox("a"), m);
    expect(m.acked).toBe(true);
  });

  it("ignores one agent's acks, naks and resends for another agent's deliveries", async () => {
    const t = setup();
    await t.deliverer.add("a");
    await t.deliverer.add("b");
    t.store(1, subjects.logInbox("a"));
    const m = t.message(1, subjects.logInbox("a"));
    t.fromConsumer(consumers.inbox("a"), m);
    t.deliverer.ack("b", { ack: [1], nak: [1], working: [1], resend: true });
    expect(m.acked).toBe(false);
    expect(m.naked).toBe(false);
    expect(t.published.filter((p) => p.subject === subjects.delivery("b"))).toEqual([]);
    t.deliverer.ack("a", { ack: [1] });
    expect(m.acked).toBe(true);
  });

  it("resends everything still unacknowledged, in log order, marked as redelivered", async () => {
    const t = setup();
    await t.deliverer.add("a");
    t.store(1, subjects.logInbox("a"));
    t.store(2, subjects.logReplies("a"));
    t.store(3, subjects.logInbox("a"));
    t.fromConsumer(consumers.inbox("a"), t.message(1, subjects.logInbox("a")));
    t.deliverer.ack("a", { ack: [1] });
    t.published.length = 0;
    t.deliverer.ack("a", { resend: true });
    expect(t.published).toEqual([
      { subject: subjects.delivery("a"), seq: 2, redelivered: true },
      { subject: subjects.delivery("a"), seq: 3, redelivered: true },
    ]);
  });

  it("hands over what JetStream redelivers after a kernel restart (nothing handed at store time)", async () => {
    const t = setup();
    t.setHead(10);
    await t.deliverer.add("a");
    const m = t.message(7, subjects.logInbox("a"), true);
    t.fromConsumer(consumers.inbox("a"), m);
    expect(t.published).toEqual([{ subject: subjects.delivery("a"), seq: 7, redelivered: true }]);
  });
});
