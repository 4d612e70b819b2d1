/**
 * The state digest: one sha256 over everything a reader of the store can observe, in key
 * order, so a store rebuilt from the log (or restored from an export) can be proven equal to
 * the live one by comparing two hex strings.
 *
 * Hashed, in order: a header (digest scheme, store format); each namespace's revision and
 * vector dimension; then every record visible at the digest's instant, as its key tuple, its
 * stored row bytes (value, version, write time, expiry, tags, text, provenance) and its vector.
 * Left out, because they are derived or depend on when housekeeping last ran rather than on
 * what was written: the full-text and vector indexes, BM25 statistics, the TTL queue, records
 * already expired at the instant (whether or not compaction has removed them yet), and the
 * applied log sequence. Record rows hold no wall-clock field of their own: `at` is the causing
 * event's time when the memory service writes.
 */
import { createHash } from "node:crypto";
import { visible, type StoreCore } from "./core.js";
import { STORE_FORMAT, decodeMeta, decodeRecordRow, pack, prefixRange, splitVectorRow, versionKey, type RecordKey } from "./layout.js";
import { parseNamespace, type NamespaceId } from "../../src/memory/namespace.js";
import { checkTime } from "../../src/memory/record.js";

export interface DigestOptions {
  /** The instant whose visible state is hashed (ms since the epoch). Default: `now()`. */
  at?: number;
  /** Only these namespaces. Default: all. */
  namespaces?: readonly string[];
}

/** sha256 (hex) of the store's visible state. */
export function digest(core: StoreCore, opts: DigestOptions = {}): string {
  core.assertOpen();
  const at = opts.at === undefined ? core.now() : checkTime(opts.at, "at");
  const only = opts.namespaces === undefined ? undefined : [...new Set(opts.namespaces.map((ns) => parseNamespace(ns)))].sort();
  const hash = createHash("sha256");
  hash.update(pack(["maxwell.memory.digest", 1, STORE_FORMAT]));
  const transaction = core.env.useReadTransaction();
  try {
    const namespaces = only ?? ([...core.tables.meta.getKeys({ transaction })] as NamespaceId[]);
    for (const ns of namespaces) {
      const meta = decodeMeta(core.tables.meta.get(ns, { transaction }));
      hash.update(pack(["namespace", ns, meta.revision, meta.dimension ?? null]));
    }
    for (const ns of namespaces) {
      for (const { key, value } of core.tables.records.getRange({ ...prefixRange(ns), transaction })) {
        const row = decodeRecordRow(value);
        if (!visible(row.expiresAt, at)) continue;
        hash.update(pack(["record", ...(key as RecordKey)]));
        hash.update(value);
        if (row.vector) {
          const vector = core.tables.vectors.get(versionKey(ns, row.version), { transaction });
          hash.update(pack(vector === undefined ? null : splitVectorRow(vector).floats));
        }
      }
    }
  } finally {
    transaction.done();
  }
  return hash.digest("hex");
}
