/**
 * Timing primitives for the benchmark: latency samples with nearest-rank percentiles, and
 * drivers that run an async operation sequentially or with a fixed number in flight, bounded by
 * both a count and a wall-clock budget so the benchmark always stops by itself.
 */

/** Latency summary in milliseconds. */
export interface Latency {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function summarize(samples: readonly number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((s, x) => s + x, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length > 0 ? sum / sorted.length : Number.NaN,
  };
}

export interface SequentialResult {
  latency: Latency;
  opsPerSec: number;
  completed: number;
  elapsedMs: number;
}

/**
 * Runs `op` `warmup` times untimed (for at most a quarter of `budgetMs`), then up to `n` times
 * one after another, timing each, and stops early when `budgetMs` has passed. Op indices are
 * `0..warmup-1` for the warmup and `warmup..warmup+n-1` for the timed runs.
 */
export async function sequential(op: (i: number) => Promise<unknown>, opts: { n: number; warmup: number; budgetMs: number }): Promise<SequentialResult> {
  const warmupUntil = performance.now() + opts.budgetMs / 4;
  for (let i = 0; i < opts.warmup && performance.now() < warmupUntil; i++) await op(i);
  const samples: number[] = [];
  const start = performance.now();
  const stopAt = start + opts.budgetMs;
  for (let i = 0; i < opts.n; i++) {
    const t0 = performance.now();
    await op(opts.warmup + i);
    const t1 = performance.now();
    samples.push(t1 - t0);
    if (t1 > stopAt) break;
  }
  const elapsedMs = performance.now() - start;
  return { latency: summarize(samples), opsPerSec: (samples.length * 1000) / elapsedMs, completed: samples.length, elapsedMs };
}

export interface ConcurrentResult {
  opsPerSec: number;
  completed: number;
  elapsedMs: number;
  latency: Latency;
  errors: number;
}

/**
 * Keeps `inFlight` calls of `op` outstanding until `n` have been started or `budgetMs` has
 * passed, then waits for the ones in flight. Each completion counts as one operation.
 */
export async function concurrent(op: (i: number) => Promise<unknown>, opts: { n: number; inFlight: number; budgetMs: number }): Promise<ConcurrentResult> {
  const samples: number[] = [];
  let next = 0;
  let errors = 0;
  const start = performance.now();
  const stopAt = start + opts.budgetMs;
  const lane = async (): Promise<void> => {
    while (next < opts.n && performance.now() < stopAt) {
      const i = next++;
      const t0 = performance.now();
      try {
        await op(i);
        samples.push(performance.now() - t0);
      } catch {
        errors += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.inFlight }, () => lane()));
  const elapsedMs = performance.now() - start;
  return { opsPerSec: (samples.length * 1000) / elapsedMs, completed: samples.length, elapsedMs, latency: summarize(samples), errors };
}

/** Resolves when `predicate` holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}
