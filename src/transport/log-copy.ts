/**
 * Seeding a fork's sandbox (`maxwell replay fork`) before its kernel starts: the parent log's
 * entries appended verbatim to the sandbox's own log stream (same subjects, same bytes, same
 * sequences, so the hash chain holds), and each agent's durable consumers settled so that only
 * the work in flight at the cut is delivered again.
 */
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "./connection.js";
import { ErrorCode, MaxwellError } from "../protocol/errors.js";
import { LOG_STREAM } from "../protocol/subjects.js";
import type { StoredEntry } from "../protocol/chain.js";

/** Appends published at once before waiting for their acks. */
const WINDOW = 256;

/**
 * Appends `entries` (in order, the first at the stream's next sequence) to the log stream. Each
 * publish expects the sequence before it, so the copy lands at exactly the parent's sequences or
 * fails.
 */
export async function appendVerbatim(nc: NatsConnection, entries: Iterable<StoredEntry>): Promise<number> {
  const js = jetstream(nc);
  let inFlight: Promise<unknown>[] = [];
  let copied = 0;
  for (const entry of entries) {
    inFlight.push(
      js.publish(entry.subject, entry.data, { expect: { streamName: LOG_STREAM, lastSequence: entry.seq - 1 } }).then((ack) => {
        if (ack.seq !== entry.seq) throw new MaxwellError(ErrorCode.Conflict, `entry #${entry.seq} was stored at #${ack.seq}`);
      }),
    );
    copied += 1;
    if (inFlight.length >= WINDOW) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
  return copied;
}

/**
 * Settles everything a durable consumer holds: acknowledges each message `redeliver` says no to,
 * and leaves the others to be delivered again at once (nak) when the consumer is next read.
 * Only for a consumer nobody else reads yet.
 */
export async function settleDurable(nc: NatsConnection, consumer: string, redeliver: (seq: number) => boolean): Promise<{ acked: number; redelivered: number[] }> {
  const js = jetstream(nc);
  const c = await js.consumers.get(LOG_STREAM, consumer);
  const total = (await c.info()).num_pending;
  const held: Array<{ seq: number; nak: () => void }> = [];
  const seen = new Set<number>();
  let acked = 0;
  while (seen.size < total) {
    const batch = await c.fetch({ max_messages: Math.min(1024, total - seen.size), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      got += 1;
      if (seen.has(m.seq)) continue;
      seen.add(m.seq);
      if (redeliver(m.seq)) held.push({ seq: m.seq, nak: () => m.nak() });
      else {
        m.ack();
        acked += 1;
      }
    }
    if (got === 0) throw new MaxwellError(ErrorCode.Unavailable, `consumer ${consumer} stopped delivering after ${seen.size} of ${total} messages`);
  }
  // Naked last, so the fetches above never see them again.
  for (const h of held) h.nak();
  await nc.flush();
  return { acked, redelivered: held.map((h) => h.seq) };
}
