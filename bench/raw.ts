/**
 * The floor: what the NATS server and client on this machine do without Maxwell in between.
 * Core request-reply, JetStream publish (plain, and with the dedupe id and expected-last-sequence
 * headers the kernel's appender sends), and publish-to-durable-pull-consumer delivery latency.
 * Everything runs with the kernel's credential, on a scratch stream that is not the log.
 */
import { connectNats, jetstream, jetstreamManager, type NatsConnection } from "../src/transport/connection.js";
import type { CpuMeter, CpuShare } from "./cpu.js";
import { concurrent, sequential, summarize, type ConcurrentResult, type Latency, type SequentialResult } from "./stats.js";

export const BENCH_STREAM = "BENCH";

export interface RawResults {
  payloadBytes: number;
  natsRequestReply: SequentialResult;
  jsPublishSync: SequentialResult;
  jsPublishSyncHeaders: SequentialResult;
  jsPublishAsync: ConcurrentResult;
  jsPublishAsyncCpu: CpuShare;
  jsPublishAsyncHeaders: ConcurrentResult;
  jsDeliveryLatency: Latency;
}

/** Payload of roughly the size of a small msgpack'd message body. */
const PAYLOAD = new Uint8Array(128).fill(0x61);

export async function measureRaw(url: string, creds: string, say: (line: string) => void, cpu: CpuMeter): Promise<RawResults> {
  const conns: NatsConnection[] = [];
  const open = async (name: string): Promise<NatsConnection> => {
    const nc = await connectNats({ servers: url, creds, name, reconnect: false });
    conns.push(nc);
    return nc;
  };
  try {
    // 1. Core request-reply, sequential.
    const responder = await open("bench-responder");
    const requester = await open("bench-requester");
    responder.subscribe("bench.echo", { callback: (_err, msg) => void msg.respond(msg.data) });
    await responder.flush();
    say("raw NATS request-reply (sequential, N=5000)");
    const natsRequestReply = await sequential(() => requester.request("bench.echo", PAYLOAD, { timeout: 5000 }), { n: 5000, warmup: 500, budgetMs: 20_000 });

    // 2. JetStream publish on a scratch stream (file storage, like the log).
    const jsm = await jetstreamManager(requester);
    const js = jetstream(requester);
    await jsm.streams.delete(BENCH_STREAM).catch(() => undefined);
    await jsm.streams.add({
      name: BENCH_STREAM,
      subjects: ["bench.>"],
      storage: "file",
      retention: "limits",
      discard: "new",
      max_msgs: -1,
      max_bytes: -1,
      duplicate_window: 120 * 1_000_000_000,
      num_replicas: 1,
    });

    say("raw JetStream publish, sync (N=5000)");
    const jsPublishSync = await sequential(() => js.publish("bench.sync", PAYLOAD), { n: 5000, warmup: 500, budgetMs: 20_000 });

    // What the appender sends: Nats-Msg-Id and Nats-Expected-Last-Sequence on every publish.
    let lastSeq = (await jsm.streams.info(BENCH_STREAM)).state.last_seq;
    let msgNo = 0;
    const chained = async (): Promise<void> => {
      const expected = lastSeq++;
      const ack = await js.publish("bench.chain", PAYLOAD, { msgID: `m${msgNo++}`, expect: { lastSequence: expected }, timeout: 5000 });
      if (ack.seq !== expected + 1) throw new Error(`chained publish stored at ${ack.seq}, expected ${expected + 1}`);
    };
    say("raw JetStream publish, sync, msgID + expected-last-seq (N=5000)");
    const jsPublishSyncHeaders = await sequential(chained, { n: 5000, warmup: 200, budgetMs: 20_000 });

    say("raw JetStream publish, async 256 in flight (N=20000)");
    await concurrent(() => js.publish("bench.async", PAYLOAD), { n: 2000, inFlight: 256, budgetMs: 10_000 });
    const stopCpu = cpu.start();
    const jsPublishAsync = await concurrent(() => js.publish("bench.async", PAYLOAD), { n: 20_000, inFlight: 256, budgetMs: 20_000 });
    const jsPublishAsyncCpu = stopCpu();

    // The stream tail moved: re-read it before the next chained run.
    lastSeq = (await jsm.streams.info(BENCH_STREAM)).state.last_seq;
    say("raw JetStream publish, async 256 in flight, msgID + expected-last-seq (N=20000)");
    const jsPublishAsyncHeaders = await concurrent(chained, { n: 20_000, inFlight: 256, budgetMs: 20_000 });
    if (jsPublishAsyncHeaders.errors > 0) say(`  (${jsPublishAsyncHeaders.errors} chained publishes failed)`);

    // 3. Publish -> durable pull consumer delivery, sequential (the log-is-the-bus hop).
    say("raw JetStream publish -> durable pull consumer delivery (N=2000)");
    await jsm.consumers.add(BENCH_STREAM, {
      durable_name: "bench-lat",
      filter_subject: "bench.lat",
      ack_policy: "explicit",
      deliver_policy: "new",
      max_ack_pending: 4096,
    });
    const consumerConn = await open("bench-consumer");
    const consumer = await jetstream(consumerConn).consumers.get(BENCH_STREAM, "bench-lat");
    const messages = await consumer.consume({ max_messages: 256 });
    let received = 0;
    const loop = (async () => {
      for await (const m of messages) {
        received += 1;
        m.ack();
      }
    })();
    const delivery: number[] = [];
    for (let i = 0; i < 2200; i++) {
      const t0 = performance.now();
      const want = received + 1;
      const ack = js.publish("bench.lat", PAYLOAD);
      if (!(await waitForFast(() => received >= want, 5000))) throw new Error("durable consumer stopped delivering");
      if (i >= 200) delivery.push(performance.now() - t0);
      await ack;
    }
    await messages.close();
    await loop;

    await jsm.streams.delete(BENCH_STREAM).catch(() => undefined);
    return {
      payloadBytes: PAYLOAD.length,
      natsRequestReply,
      jsPublishSync,
      jsPublishSyncHeaders,
      jsPublishAsync,
      jsPublishAsyncCpu,
      jsPublishAsyncHeaders,
      jsDeliveryLatency: summarize(delivery),
    };
  } finally {
    await Promise.allSettled(conns.map((nc) => nc.close()));
  }
}

/** Like waitFor, but yields with setImmediate so sub-millisecond latencies are not rounded up. */
async function waitForFast(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
  if (predicate()) return true;
  const until = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > until) return false;
    await new Promise((r) => setImmediate(r));
  }
  return true;
}
