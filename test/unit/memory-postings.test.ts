/**
 * Posting rows (services/memory/core.ts, layout.ts) against a reference set, on real LMDB: after
 * any mix of appends, inserts out of order (descending, random) and removals, in writes of any
 * size, every row starts at or below its first posting and ends below the next row's start, no
 * row outgrows its bound, and the rows hold exactly the postings that should be there.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreCore, type WriteTx } from "../../services/memory/core.js";
import { POSTING_ROW, POSTING_ROW_MAX, forEachPosting, prefixRange } from "../../services/memory/layout.js";
import { parseNamespace } from "../../src/memory/namespace.js";

const ns = parseNamespace("shared:postings");
let root: string;
let n = 0;
const cores: StoreCore[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "maxwell-memory-postings-"));
});
afterAll(async () => {
  for (const c of cores) await c.close();
  rmSync(root, { recursive: true, force: true });
});

function fresh(): StoreCore {
  const core = StoreCore.open({ path: join(root, `c${n++}`), noSync: true });
  cores.push(core);
  return core;
}

/** The term's rows as stored: [first, versions]. */
function rows(core: StoreCore, term: string): [number, number[]][] {
  const out: [number, number[]][] = [];
  for (const { key, value } of core.tables.postings.getRange(prefixRange(ns, term))) {
    const versions: number[] = [];
    forEachPosting(value, (version) => versions.push(version));
    out.push([(key as [string, string, number])[2], versions]);
  }
  return out;
}

function checkRows(core: StoreCore, term: string, expected: Set<number>): void {
  const stored = rows(core, term);
  const all: number[] = [];
  stored.forEach(([first, versions], i) => {
    const next = stored[i + 1]?.[0] ?? Number.POSITIVE_INFINITY;
    expect(versions.length).toBeGreaterThan(0);
    expect(versions.length).toBeLessThanOrEqual(POSTING_ROW_MAX);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(versions[0]).toBeGreaterThanOrEqual(first);
    expect(versions.at(-1)).toBeLessThan(next);
    all.push(...versions);
  });
  expect(all).toEqual([...expected].sort((a, b) => a - b));
}

function prng(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

describe("posting rows", () => {
  it("keeps rows ordered and bounded through appends, out-of-order inserts and removals", async () => {
    const core = fresh();
    const random = prng(11);
    const expected = new Set<number>();
    let newest = 0;
    for (let round = 0; round < 40; round++) {
      const size = 1 + Math.floor(random() * 60);
      await core.write((tx: WriteTx) => {
        for (let i = 0; i < size; i++) {
          const r = random();
          if (r < 0.4) {
            newest += 1 + Math.floor(random() * 3);
            tx.addPosting(ns, "t", { version: newest, tf: 1, length: 1 }, true);
            expected.add(newest);
          } else if (r < 0.7) {
            const v = 1 + Math.floor(random() * Math.max(1, newest));
            if (!expected.has(v)) {
              tx.addPosting(ns, "t", { version: v, tf: 2, length: 3 }, false);
              expected.add(v);
            }
          } else if (expected.size > 0) {
            const all = [...expected];
            const v = all[Math.floor(random() * all.length)] as number;
            tx.removePosting(ns, "t", v);
            expected.delete(v);
          }
        }
      });
      checkRows(core, "t", expected);
    }
    expect(expected.size).toBeGreaterThan(100);
  });

  it("packs postings inserted in descending order into full rows, not one row each", async () => {
    const core = fresh();
    const expected = new Set<number>();
    await core.write((tx: WriteTx) => {
      for (let v = 1000; v >= 1; v--) {
        tx.addPosting(ns, "d", { version: v, tf: 1, length: 1 }, false);
        expected.add(v);
      }
    });
    checkRows(core, "d", expected);
    expect(rows(core, "d").length).toBeLessThanOrEqual(Math.ceil(1000 / (POSTING_ROW_MAX / 2)));
  });

  it("starts a new row when the last one is full, and drops rows that become empty", async () => {
    const core = fresh();
    await core.write((tx: WriteTx) => {
      for (let v = 1; v <= POSTING_ROW * 2 + 1; v++) tx.addPosting(ns, "a", { version: v, tf: 1, length: 1 }, true);
    });
    expect(rows(core, "a").map(([first, versions]) => [first, versions.length])).toEqual([
      [1, POSTING_ROW],
      [POSTING_ROW + 1, POSTING_ROW],
      [2 * POSTING_ROW + 1, 1],
    ]);
    await core.write((tx: WriteTx) => {
      for (let v = POSTING_ROW + 1; v <= 2 * POSTING_ROW; v++) tx.removePosting(ns, "a", v);
    });
    expect(rows(core, "a").map(([first]) => first)).toEqual([1, 2 * POSTING_ROW + 1]);
    // Remembered row positions stay right after rows vanish: the next append lands in order.
    await core.write((tx: WriteTx) => tx.addPosting(ns, "a", { version: 5000, tf: 1, length: 1 }, true));
    const expected = new Set<number>([...Array.from({ length: POSTING_ROW }, (_, i) => i + 1), 2 * POSTING_ROW + 1, 5000]);
    checkRows(core, "a", expected);
  });
});
