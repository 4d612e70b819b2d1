/**
 * Kernel start-up on the log the other benchmarks left behind: folding the whole log (snapshots
 * off) against loading the state snapshot the kernel saved at its last clean stop and folding
 * only what came after it. The time is the kernel's own (logged with its start-up line), so
 * process start and connecting are left out of both.
 */
import { spawnService, type ServiceProcess } from "../src/runtime/deployment.js";

export interface RestartResults {
  /** Events in the log when the kernel started. */
  events: number;
  /** Start-up fold of the whole log, snapshots off. */
  fullFoldMs: number;
  /** Start-up from the newest snapshot plus the events after it. */
  fromSnapshotMs: number;
  /** The snapshot's sequence and how many events were folded after it. */
  snapshotSeq: number;
  foldedAfterSnapshot: number;
}

interface StartLine {
  msg: string;
  ms: number;
  events: number;
  seq: number;
  fromSnapshot?: number;
}

async function stop(kernel: ServiceProcess): Promise<void> {
  if (kernel.child.exitCode !== null || kernel.child.signalCode !== null) return;
  kernel.child.kill("SIGTERM");
  await kernel.exited;
}

/** Starts the kernel and returns it with the start-up line it logged. */
async function start(dir: string, url: string, args: string[]): Promise<{ kernel: ServiceProcess; line: StartLine }> {
  let line: StartLine | undefined;
  const kernel = spawnService("kernel", ["--data", dir, "--nats", url, ...args], {
    env: { MAXWELL_LOG_LEVEL: "info" },
    onLog: (text) => {
      try {
        const entry = JSON.parse(text) as Partial<StartLine>;
        if (typeof entry.msg === "string" && /^state (rebuilt|loaded)/.test(entry.msg)) line = entry as StartLine;
      } catch {
        // Not a log record.
      }
    },
  });
  await kernel.ready;
  if (!line) throw new Error("the kernel did not log how it rebuilt its state");
  return { kernel, line };
}

/**
 * Stops `running` (a clean stop saves a snapshot), starts the kernel with snapshots off, stops it,
 * starts it with them on; returns the figures and the kernel left running.
 */
export async function measureRestart(say: (line: string) => void, opts: { dir: string; url: string; running: ServiceProcess }): Promise<{ results: RestartResults; kernel: ServiceProcess }> {
  say("kernel start-up: the whole log folded, then from the snapshot saved at a clean stop");
  await stop(opts.running);
  const full = await start(opts.dir, opts.url, ["--no-snapshots"]);
  await stop(full.kernel);
  const snap = await start(opts.dir, opts.url, []);
  if (snap.line.fromSnapshot === undefined) throw new Error(`the kernel did not start from a snapshot: ${snap.line.msg}`);
  return {
    kernel: snap.kernel,
    results: {
      events: full.line.events,
      fullFoldMs: full.line.ms,
      fromSnapshotMs: snap.line.ms,
      snapshotSeq: snap.line.fromSnapshot,
      foldedAfterSnapshot: snap.line.seq - snap.line.fromSnapshot,
    },
  };
}
