/**
 * CPU time of the benchmark's processes (this one, the kernel, nats-server) over a phase, from
 * /proc on Linux, so a figure can be read as "who was busy". Elsewhere it measures nothing.
 */
import { readFileSync } from "node:fs";

export interface CpuShare {
  /** CPU time over the phase as a share of one core (1 = one core fully busy). */
  cores: Record<string, number>;
  wallMs: number;
}

const TICKS_PER_SEC = 100; // USER_HZ on Linux

function cpuMsOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesized command name; utime and stime are the 14th and 15th fields.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    return ((utime + stime) * 1000) / TICKS_PER_SEC;
  } catch {
    return undefined;
  }
}

/** Busy CPU time of the whole machine (all processes, all cores), from /proc/stat. */
function machineBusyMs(): number | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const ticks = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    const busy = ticks.slice(0, 8).reduce((sum, t, i) => (i === 3 || i === 4 ? sum : sum + (t || 0)), 0);
    return (busy * 1000) / TICKS_PER_SEC;
  } catch {
    return undefined;
  }
}

export class CpuMeter {
  constructor(private readonly pids: Record<string, number>) {}

  /**
   * Starts a measurement; the returned function ends it. Besides each process, `machine` is
   * every process on the host and `others` what is not ours (other work skewing the figures).
   */
  start(): () => CpuShare {
    const t0 = performance.now();
    const before = Object.fromEntries(Object.entries(this.pids).map(([name, pid]) => [name, cpuMsOf(pid)]));
    const machineBefore = machineBusyMs();
    return () => {
      const wallMs = performance.now() - t0;
      const cores: Record<string, number> = {};
      let ours = 0;
      for (const [name, pid] of Object.entries(this.pids)) {
        const a = before[name];
        const b = cpuMsOf(pid);
        if (a !== undefined && b !== undefined) {
          cores[name] = (b - a) / wallMs;
          ours += cores[name];
        }
      }
      const machineAfter = machineBusyMs();
      if (machineBefore !== undefined && machineAfter !== undefined) {
        cores["machine"] = (machineAfter - machineBefore) / wallMs;
        cores["others"] = Math.max(0, cores["machine"] - ours);
      }
      return { cores, wallMs };
    };
  }
}
