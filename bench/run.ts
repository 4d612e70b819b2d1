/**
 * Maxwell's benchmark: `npm run bench`. One run, on this machine, in a temp data dir: a real
 * embedded nats-server, the built kernel as its own process, two registered agents run in this
 * process with their own credentials. Measures the floor (raw NATS and JetStream), the same
 * traffic through the kernel, the policy decision point, and memory (bench/memory.ts: the memory
 * service through the kernel against raw LMDB, search latency, rebuild rate), and the audit of
 * one trace through the log index in logs of 100k and 1M events (bench/trace-index.ts); prints a table
 * against the targets and writes bench/results.json. Stops by itself (every loop is bounded by a
 * count and a time budget) and removes its processes and temp dir.
 */
import { measureReplay } from "./replay.js";
import { measureTraceIndex } from "./trace-index.js";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { AdminClient } from "../src/runtime/admin-client.js";
import { spawnService, startEmbedded, type EmbeddedServer, type ServiceProcess } from "../src/runtime/deployment.js";
import { createLogger } from "../src/runtime/logger.js";
import { CpuMeter, type CpuShare } from "./cpu.js";
import { measureKernel, type KernelResults } from "./kernel-mediated.js";
import { measureRestart } from "./restart.js";
import { MEMORY_TARGETS, measureMemory, memoryRows } from "./memory.js";
import { measurePolicy, type PolicyResults } from "./policy.js";
import { measureRaw, type RawResults } from "./raw.js";
import { renderTable, type Row } from "./table.js";

const OVERALL_LIMIT_MS = 7 * 60_000;
const TARGETS = {
  latencyRatioMax: 3,
  throughputRatioMin: 0.5,
  absoluteMsgsPerSecMin: 10_000,
} as const;

const say = (line: string): void => void process.stderr.write(`· ${line}\n`);

interface Deployment {
  dir: string;
  embedded?: EmbeddedServer;
  kernel?: ServiceProcess;
  /** The memory service, while the memory figures are measured (bench/memory.ts stops it itself). */
  memory?: ServiceProcess;
  admin?: AdminClient;
  kernelWarnings: string[];
  causationRejections: number;
}

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));

/**
 * MAXWELL_BENCH_PROFILE=1 profiles the kernel process (bench/profiles/kernel-<time>.cpuprofile).
 * The figures of a profiled run are slower than usual; use it to see where time goes.
 */
function kernelEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { MAXWELL_LOG_LEVEL: "warn" };
  if (process.env["MAXWELL_BENCH_PROFILE"] === "1") {
    const dir = join(BENCH_DIR, "profiles");
    mkdirSync(dir, { recursive: true });
    const preload = pathToFileURL(join(BENCH_DIR, "cpu-profiler.mjs")).href;
    env["NODE_OPTIONS"] = `${process.env["NODE_OPTIONS"] ?? ""} --import ${preload}`.trim();
    env["MAXWELL_BENCH_PROFILE_OUT"] = join(dir, `kernel-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
    say(`profiling the kernel into ${env["MAXWELL_BENCH_PROFILE_OUT"]}`);
  }
  return env;
}

async function teardown(d: Deployment): Promise<void> {
  await d.admin?.close().catch(() => undefined);
  const m = d.memory;
  if (m && m.child.exitCode === null && m.child.signalCode === null) {
    m.child.kill("SIGKILL");
    await m.exited;
  }
  const k = d.kernel;
  if (k && k.child.exitCode === null && k.child.signalCode === null) {
    k.child.kill("SIGTERM");
    const stopped = await Promise.race([k.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())]);
    if (!stopped) {
      k.child.kill("SIGKILL");
      await k.exited;
    }
  }
  await d.embedded?.server.stop().catch(() => undefined);
  rmSync(d.dir, { recursive: true, force: true });
}

function rows(raw: RawResults, kernel: KernelResults, policy: PolicyResults): { rows: Row[]; ratios: Record<string, unknown> } {
  const floorP50 = raw.natsRequestReply.latency.p50;
  const floorAsync = raw.jsPublishAsync.opsPerSec;
  const rr = kernel.requestReply.latency;
  const best = Object.entries(kernel.throughput).reduce((a, b) => (b[1].opsPerSec > a[1].opsPerSec ? b : a));
  const bestRate = best[1].opsPerSec;
  const latencyRatio = rr.p50 / floorP50;
  const throughputRatio = bestRate / floorAsync;
  const oneWayRatio = kernel.oneWay.deliveredPerSec / floorAsync;
  const tp = (k: string) => kernel.throughput[k];

  const out: Row[] = [
    { section: "floor (raw NATS / JetStream, kernel creds)" },
    { name: "NATS request-reply p50", value: floorP50, unit: "ms" },
    { name: "NATS request-reply p99", value: raw.natsRequestReply.latency.p99, unit: "ms" },
    { name: "NATS request-reply, sequential", value: raw.natsRequestReply.opsPerSec, unit: "ops/s" },
    { name: "JetStream publish sync", value: raw.jsPublishSync.opsPerSec, unit: "ops/s" },
    { name: "JetStream publish sync p50", value: raw.jsPublishSync.latency.p50, unit: "ms" },
    { name: "JetStream publish sync +msgID +expect-seq", value: raw.jsPublishSyncHeaders.opsPerSec, unit: "ops/s" },
    { name: "JetStream publish sync +msgID +expect-seq p50", value: raw.jsPublishSyncHeaders.latency.p50, unit: "ms" },
    { name: "JetStream publish async (256 in flight)", value: floorAsync, unit: "ops/s" },
    { name: "JetStream publish async +msgID +expect-seq", value: raw.jsPublishAsyncHeaders.opsPerSec, unit: "ops/s", ratio: raw.jsPublishAsyncHeaders.opsPerSec / floorAsync },
    { name: "JetStream publish -> pull consumer p50", value: raw.jsDeliveryLatency.p50, unit: "ms", ratio: raw.jsDeliveryLatency.p50 / floorP50 },
    { name: "JetStream publish -> pull consumer p99", value: raw.jsDeliveryLatency.p99, unit: "ms" },
    { section: "kernel-mediated (agent A -> kernel -> log -> agent B)" },
    { name: "send syscall p50 (accepted + logged, B idle)", value: kernel.sendSyscall.latency.p50, unit: "ms", ratio: kernel.sendSyscall.latency.p50 / floorP50 },
    { name: "send syscall p99", value: kernel.sendSyscall.latency.p99, unit: "ms" },
    {
      name: "request-reply p50",
      value: rr.p50,
      unit: "ms",
      ratio: latencyRatio,
      target: `ratio <= ${TARGETS.latencyRatioMax}`,
      pass: latencyRatio <= TARGETS.latencyRatioMax,
    },
    { name: "request-reply p99", value: rr.p99, unit: "ms", ratio: rr.p99 / raw.natsRequestReply.latency.p99 },
    { name: "  request leg p50 (A call -> B handler)", value: kernel.requestLeg.p50, unit: "ms" },
    { name: "  reply leg p50 (B handler -> A has reply)", value: kernel.replyLeg.p50, unit: "ms" },
    { name: "  requests redelivered after a rejected reply", value: kernel.requestReplyRedelivered, unit: "count" },
    { name: "request-reply, sequential", value: kernel.requestReply.opsPerSec, unit: "msgs/s" },
    { name: "request-reply, 4 in flight", value: tp("inFlight4")?.opsPerSec ?? Number.NaN, unit: "msgs/s", ratio: (tp("inFlight4")?.opsPerSec ?? Number.NaN) / floorAsync },
    { name: "request-reply, 32 in flight", value: tp("inFlight32")?.opsPerSec ?? Number.NaN, unit: "msgs/s", ratio: (tp("inFlight32")?.opsPerSec ?? Number.NaN) / floorAsync },
    {
      name: `request-reply best (${best[0]}) vs JS async`,
      value: bestRate,
      unit: "msgs/s",
      ratio: throughputRatio,
      target: `ratio >= ${TARGETS.throughputRatioMin}`,
      pass: throughputRatio >= TARGETS.throughputRatioMin,
    },
    {
      name: "request-reply best, absolute",
      value: bestRate,
      unit: "msgs/s",
      target: `>= ${TARGETS.absoluteMsgsPerSecMin}`,
      pass: bestRate >= TARGETS.absoluteMsgsPerSecMin,
    },
    { name: "one-way send accepted (256 in flight)", value: kernel.oneWay.acceptedPerSec, unit: "msgs/s", ratio: kernel.oneWay.acceptedPerSec / floorAsync },
    { name: "one-way send accept p50 (256 in flight)", value: kernel.oneWay.acceptLatency.p50, unit: "ms" },
    {
      name: "one-way send delivered to B (256 in flight)",
      value: kernel.oneWay.deliveredPerSec,
      unit: "msgs/s",
      ratio: oneWayRatio,
      target: `ratio >= ${TARGETS.throughputRatioMin}, >= ${TARGETS.absoluteMsgsPerSecMin}`,
      pass: oneWayRatio >= TARGETS.throughputRatioMin && kernel.oneWay.deliveredPerSec >= TARGETS.absoluteMsgsPerSecMin,
    },
    { section: "kernel CPU per operation (less sensitive to other load on the machine than rates)" },
    { name: "per send syscall (sequential, B idle)", value: cpuPerOp(kernel.cpu["sendSyscall"], kernel.sendSyscall.opsPerSec), unit: "µs" },
    { name: "per request-reply (32 in flight)", value: cpuPerOp(kernel.cpu["inFlight32"], tp("inFlight32")?.opsPerSec), unit: "µs" },
    { name: "per one-way send, delivered (256 in flight)", value: cpuPerOp(kernel.cpu["oneWay"], kernel.oneWay.deliveredPerSec), unit: "µs" },
    { section: `policy (PolicyEngine, default set: ${policy.policies} policies)` },
    { name: "decisions, cached", value: policy.cached.decisionsPerSec, unit: "ops/s" },
    { name: "decisions, uncached", value: policy.uncached.decisionsPerSec, unit: "ops/s" },
    { name: "decision, uncached p50", value: policy.uncached.latencyUs.p50, unit: "µs" },
    { name: "decision, uncached p99", value: policy.uncached.latencyUs.p99, unit: "µs" },
    { name: "decision, distinct keys p50", value: policy.distinctKeys.latencyUs.p50, unit: "µs" },
    { name: "delegated (agent for principal), cached", value: policy.delegated.cachedPerSec, unit: "ops/s" },
    { name: "delegated, uncached", value: policy.delegated.uncachedPerSec, unit: "ops/s" },
    { name: "delegated, uncached p50", value: policy.delegated.uncachedUs.p50, unit: "µs" },
  ];
  return {
    rows: out,
    ratios: {
      latency: { name: "kernel request-reply p50 / NATS request-reply p50", value: latencyRatio, target: `<= ${TARGETS.latencyRatioMax}`, pass: latencyRatio <= TARGETS.latencyRatioMax },
      throughput: {
        name: `kernel request-reply msgs/s (${best[0]}) / JetStream async publish ops/s`,
        value: throughputRatio,
        target: `>= ${TARGETS.throughputRatioMin}`,
        pass: throughputRatio >= TARGETS.throughputRatioMin,
      },
      absolute: { name: `kernel request-reply msgs/s (${best[0]})`, value: bestRate, target: `>= ${TARGETS.absoluteMsgsPerSecMin}`, pass: bestRate >= TARGETS.absoluteMsgsPerSecMin },
      oneWay: {
        name: "kernel one-way sends delivered/s / JetStream async publish ops/s",
        value: oneWayRatio,
        absolute: kernel.oneWay.deliveredPerSec,
        pass: oneWayRatio >= TARGETS.throughputRatioMin && kernel.oneWay.deliveredPerSec >= TARGETS.absoluteMsgsPerSecMin,
      },
    },
  };
}

/** Microseconds of kernel CPU per operation in a phase: its cores divided by its rate. */
function cpuPerOp(share: CpuShare | undefined, opsPerSec: number | undefined): number {
  const cores = share?.cores["kernel"];
  if (cores === undefined || opsPerSec === undefined || opsPerSec <= 0) return Number.NaN;
  return (cores / opsPerSec) * 1_000_000;
}

/** Cores busy per process and phase: shows which process limits a figure. */
function cpuTable(phases: Record<string, CpuShare>): string {
  const procs = ["bench", "kernel", "nats-server", "others", "machine"];
  const lines = [`cores busy (machine has ${cpus().length})`.padEnd(32) + procs.map((p) => p.padStart(12)).join("")];
  for (const [name, share] of Object.entries(phases)) {
    lines.push(name.padEnd(32) + procs.map((p) => (share.cores[p] === undefined ? "n/a" : (share.cores[p] as number).toFixed(2)).padStart(12)).join(""));
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const started = performance.now();
  // Other work on the machine skews every figure: record how busy it was when the run began.
  const loadAtStart = loadavg()[0] ?? 0;
  const d: Deployment = { dir: mkdtempSync(join(tmpdir(), "maxwell-bench-")), kernelWarnings: [], causationRejections: 0 };
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= teardown(d));
  const abort = (why: string): void => {
    process.stderr.write(`bench: ${why}; cleaning up\n`);
    void cleanup().finally(() => process.exit(1));
  };
  process.once("SIGINT", () => abort("interrupted"));
  process.once("SIGTERM", () => abort("terminated"));
  setTimeout(() => abort(`did not finish within ${OVERALL_LIMIT_MS / 1000} s`), OVERALL_LIMIT_MS).unref();

  try {
    const policy = measurePolicy(say);

    say("starting nats-server and the kernel");
    d.embedded = await startEmbedded({ dataDir: d.dir });
    const url = d.embedded.server.url;
    d.kernel = spawnService("kernel", ["--data", d.dir, "--nats", url], {
      env: kernelEnv(),
      onLog: (line) => {
        d.kernelWarnings.push(line);
        if (/causation event \S+ is unknown to the kernel/.test(line)) d.causationRejections += 1;
      },
    });
    await d.kernel.ready;
    d.admin = await AdminClient.connect(url, d.embedded.layout.credsOf("admin"));
    await d.admin.waitForKernel();

    const pids: Record<string, number> = { bench: process.pid, "nats-server": d.embedded.server.pid };
    if (d.kernel.child.pid !== undefined) pids["kernel"] = d.kernel.child.pid;
    const cpu = new CpuMeter(pids);
    const raw = await measureRaw(url, d.embedded.layout.credsOf("kernel"), say, cpu);
    const kernel = await measureKernel({
      url,
      admin: d.admin,
      log: createLogger("bench", "silent"),
      say,
      causationRejections: () => d.causationRejections,
      cpu,
    });

    say("state rebuild: fold the whole log into a fresh kernel state and compare digests with the live one");
    const stateReplay = await d.admin.replayState();
    const agentReplay = await measureReplay(say);
    const memory = await measureMemory(say, {
      url,
      dir: d.dir,
      admin: d.admin,
      log: createLogger("bench", "silent"),
      onService: (service) => {
        d.memory = service;
      },
    });
    const restarted = await measureRestart(say, { dir: d.dir, url, running: d.kernel });
    d.kernel = restarted.kernel;
    const restart = restarted.results;
    // Its own nats-servers and logs of 100k and 1M events (about 75 s); the deployment above idles.
    const traceIndex = await measureTraceIndex(say);
    const { rows: table, ratios } = rows(raw, kernel, policy);
    const memoryTable = memoryRows(memory, kernel.requestReply.latency.p50);
    table.push(
      { section: "replay and audit" },
      {
        name: `agent replay of a ${agentReplay.syscalls}-syscall trace`,
        value: agentReplay.medianMs,
        unit: "ms",
        target: `<= ${agentReplay.targetMs}`,
        pass: agentReplay.medianMs <= agentReplay.targetMs,
      },
      { name: "  agent replay rate", value: agentReplay.syscallsPerSec, unit: "syscalls/s" },
      {
        name: `state rebuild from the log (${stateReplay.events} events)`,
        value: stateReplay.eventsPerSec,
        unit: "events/s",
        target: ">= 100000",
        pass: stateReplay.eventsPerSec >= 100_000,
      },
      { name: "  rebuilt state digest equals live", value: stateReplay.identical ? 1 : 0, unit: "bool" },
      ...traceIndex.runs.flatMap((r) => [
        {
          name: `audit of one trace, log of ${r.events.toLocaleString("en-US")} events (p50, via the index)`,
          value: r.audit.p50,
          unit: "ms",
          ...(r.events >= 1_000_000 ? { target: `<= ${traceIndex.targetMs}`, pass: r.audit.p50 <= traceIndex.targetMs } : {}),
        },
        { name: `  same audit again (server blocks cached)`, value: r.auditAgain.p50, unit: "ms" },
        { name: `  log index build (${r.events.toLocaleString("en-US")} events)`, value: r.indexPerSec, unit: "events/s" },
        { name: `  log index size`, value: r.indexBytes / 1_048_576, unit: "MiB" },
        ...(r.scanMs !== undefined ? [{ name: `  same audit by a full scan (${r.events.toLocaleString("en-US")} events)`, value: r.scanMs, unit: "ms" }] : []),
      ]),
      { name: `kernel start-up, whole log folded (${restart.events} events)`, value: restart.fullFoldMs, unit: "ms" },
      {
        name: `kernel start-up from its snapshot (+${restart.foldedAfterSnapshot} events after it)`,
        value: restart.fromSnapshotMs,
        unit: "ms",
        ratio: restart.fromSnapshotMs / Math.max(restart.fullFoldMs, 1),
      },
      ...memoryTable.rows,
    );
    const cpuList = cpus();
    const machine = {
      node: process.version,
      natsServer: d.embedded.server.version.text,
      cpus: cpuList.length,
      cpuModel: cpuList[0]?.model ?? "unknown",
      platform: `${process.platform}-${process.arch}`,
      loadAverage1mAtStart: loadAtStart,
      loadAverage1mAtEnd: loadavg()[0] ?? 0,
    };
    process.stdout.write(`\nMaxwell benchmark — node ${machine.node}, nats-server ${machine.natsServer}, ${machine.cpus} CPUs (${machine.cpuModel}), load ${loadAtStart.toFixed(2)} at start\n\n`);
    process.stdout.write(renderTable(table) + "\n");
    process.stdout.write("\n" + cpuTable({ "raw JetStream async publish": raw.jsPublishAsyncCpu, ...kernel.cpu }) + "\n");
    const rejected = Object.entries(kernel.causationRejections).filter(([, n]) => n > 0);
    if (rejected.length > 0) {
      process.stdout.write(
        `\nkernel rejected B's reply as naming an unknown causation (each one costs a 1 s redelivery): ${rejected.map(([k, n]) => `${k} ${n}`).join(", ")}\n`,
      );
    }
    const other = d.kernelWarnings.filter((l) => !/causation event \S+ is unknown to the kernel/.test(l));
    if (other.length > 0) process.stdout.write(`kernel logged ${other.length} other warning/error lines; first: ${other[0]?.slice(0, 300)}\n`);

    const out = join(BENCH_DIR, "results.json");
    writeFileSync(
      out,
      JSON.stringify(
        {
          timestamp: new Date().toISOString(),
          machine,
          targets: { ...TARGETS, memory: MEMORY_TARGETS },
          ratios: { ...ratios, ...memoryTable.ratios },
          table: table.filter((r) => r.name !== undefined),
          raw,
          kernel,
          policy,
          agentReplay,
          traceIndex,
          stateReplay: { events: stateReplay.events, ms: stateReplay.ms, eventsPerSec: stateReplay.eventsPerSec, identical: stateReplay.identical },
          restart,
          memory,
          kernelWarnings: d.kernelWarnings.slice(0, 20),
          durationMs: Math.round(performance.now() - started),
        },
        null,
        2,
      ) + "\n",
    );
    process.stdout.write(`\nwrote ${out} (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
  } finally {
    await cleanup();
  }
}

try {
  await main();
  process.exit(0);
} catch (err) {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
