/**
 * Compaction: keeps the store's size bounded by live data, not history.
 *
 * Superseded data never accumulates in the first place: a write replaces the previous version
 * of its key in the same commit and removes that version's index rows (postings, doc row,
 * vector, TTL entry), and a delete removes them too. What remains for compaction is expiry: a
 * record whose TTL has passed is invisible at once but still stored; compaction drains the TTL
 * queue (table `expiry`, ordered by expiry time, so it reads only what has expired) and removes
 * each such record with its index rows, in batches so no single commit grows without bound.
 * LMDB reuses the freed pages for later writes, so the file stops growing once its live data
 * stops growing.
 */
import type { StoreCore } from "./core.js";
import { decodeRecordRow, recordKey } from "./layout.js";
import type { NamespaceId } from "../../src/memory/namespace.js";
import type { RecordKind } from "../../src/memory/record.js";

export interface CompactionReport {
  /** Expired records removed. */
  removed: number;
  /** Outcomes of old logged writes forgotten (a repeat of one that old is answered from the log instead). */
  effectsPruned: number;
  /** The time compaction judged expiry against. */
  now: number;
}

type ExpiryKey = [number, NamespaceId, RecordKind, string];

/** Effect outcomes kept by default: far more than the calls that can be in flight or retried. */
export const KEEP_EFFECTS = 100_000;

/**
 * Removes every record that expired at or before `now()`, and the outcomes of all but the newest
 * `keepEffects` logged writes (they answer repeated calls, which come within seconds).
 */
export async function compact(core: StoreCore, opts: { batch?: number; keepEffects?: number } = {}): Promise<CompactionReport> {
  core.assertOpen();
  const batch = Math.max(1, Math.min(opts.batch ?? 1000, 100_000));
  const now = core.now();
  let removed = 0;
  for (;;) {
    const [done, count] = await core.write((tx) => {
      // Collect first: the range must not be iterated while it is being modified.
      const due = [...core.tables.expiry.getKeys({ end: [now + 1], limit: batch })] as ExpiryKey[];
      let count = 0;
      for (const key of due) {
        const [expiresAt, ns, kind, recordName] = key;
        const bytes = core.tables.records.get(recordKey(ns, kind, recordName));
        const row = bytes === undefined ? undefined : decodeRecordRow(bytes);
        if (row !== undefined && row.expiresAt === expiresAt) {
          core.remove(tx, ns, kind, recordName, row);
          count++;
        } else {
          // A queue entry that outlived its record: nothing else refers to it.
          core.tables.expiry.removeSync(key);
        }
      }
      return [due.length < batch, count] as const;
    });
    removed += count;
    if (done) break;
  }
  const keep = Math.max(0, Math.floor(opts.keepEffects ?? KEEP_EFFECTS));
  let effectsPruned = 0;
  for (;;) {
    const excess = (core.tables.effects.getStats() as { entryCount: number }).entryCount - keep;
    if (excess <= 0) break;
    const pruned = await core.write(() => {
      // Never an outcome above the resume point: a catch-up may meet that write again.
      const oldest = [...core.tables.effects.getKeys({ end: core.resumeSeq() + 1, limit: Math.min(excess, batch) })];
      for (const seq of oldest) core.tables.effects.removeSync(seq);
      return oldest.length;
    });
    if (pruned === 0) break;
    effectsPruned += pruned;
  }
  return { removed, effectsPruned, now };
}
