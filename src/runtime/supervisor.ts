/**
 * The daemon behind `maxwell up`: starts nats-server (embedded mode) or joins one (external),
 * runs the kernel and every configured agent as its own process with its own credential,
 * restarts what crashes with backoff, and shuts everything down in order on SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { ErrorCode, MaxwellError, assertName, type IdentityKind } from "../protocol/mod.js";
import { writeSecret } from "../transport/identity.js";
import { connectNats, jetstream, jetstreamManager, readEntriesAt, readLog, type NatsConnection } from "../transport/connection.js";
import { AdminClient } from "./admin-client.js";
import { LogIndex, LogIndexFollower } from "./log-index.js";
import { SUPERVISOR_PID_ENV, isProcessAlive } from "./orphan.js";

export { isProcessAlive };
import { spawnService, startEmbedded, readJson, type EmbeddedServer, type ServiceProcess } from "./deployment.js";
import { dataLayout, packageRoot, serviceEntry, type DataLayout } from "./paths.js";
import { parseServerVersion, supportsSyncAlways } from "../transport/nats-server.js";
import type { Logger } from "./logger.js";

/** One agent the daemon runs. */
export interface AgentSpec {
  name: string;
  /** Program and arguments; relative paths resolve against the config file's folder. */
  command: string[];
  groups?: string[];
  env?: Record<string, string>;
}

export interface PrincipalSpec {
  name: string;
  groups?: string[];
}

/** The daemon's config file (`maxwell.json`). */
export interface DaemonConfig {
  agents?: AgentSpec[];
  principals?: PrincipalSpec[];
  /** Services behind the kernel to run (default: every one that is built: llm, tools, memory). */
  services?: string[];
}

/** The services behind the kernel, in start order. */
export const SERVICES = ["memory", "llm", "tools"] as const;

/** Environment variables only the model gateway may see (it alone holds model API keys). */
function withoutModelKeys(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith("ANTHROPIC_")) out[k] = v;
  return out;
}

/** What every process the daemon starts is told of it: its pid, so the process ends with it (orphan.ts). */
const SUPERVISED = { [SUPERVISOR_PID_ENV]: String(process.pid) };

export interface SupervisorOptions {
  dataDir: string;
  config?: DaemonConfig;
  /** Folder that relative agent commands resolve against. */
  configDir?: string;
  host?: string;
  port?: number;
  strict?: boolean;
  /** Use an existing NATS server instead of starting one. */
  external?: { url: string; creds: string };
  log: Logger;
  /** Called once everything is up. */
  onReady?: (info: DaemonInfo) => void | Promise<void>;
  /** Start the kernel with `--fork`: it takes over a log copied from another (`maxwell replay fork`). */
  fork?: boolean;
  /** Called once nats-server is up (the data dir's keys and credentials made), before the kernel starts. */
  beforeKernel?: (natsUrl: string) => void | Promise<void>;
  /** Called once the kernel and services are up, before any agent starts. */
  beforeAgents?: (natsUrl: string) => void | Promise<void>;
}

/** What `maxwell status` and the CLI read from `<data>/run/daemon.json`. */
export interface DaemonInfo {
  pid: number;
  natsUrl: string;
  dataDir: string;
  startedAt: string;
  embedded: boolean;
  server: { version: string; pid?: number };
  durability: { mode: string; guarantee: string };
  kernel: { pid?: number; restarts: number };
  services?: Record<string, { pid?: number; restarts: number }>;
  agents: Record<string, { pid?: number; restarts: number; state: "running" | "restarting" | "stopped" }>;
}

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A process that stayed up this long gets its backoff reset. */
const HEALTHY_AFTER_MS = 30_000;

interface Supervised {
  name: string;
  restarts: number;
  backoff: number;
  child?: ChildProcess;
  startedAt: number;
  timer?: NodeJS.Timeout;
}

export class Supervisor {
  private embedded: EmbeddedServer | undefined;
  private kernel: ServiceProcess | undefined;
  private admin: AdminClient | undefined;
  /** Keeps the log index (<data>/index) caught up, so `audit trace` finds a trace without reading the log. */
  private indexer: LogIndexFollower | undefined;
  /** The index follower's own connection to the log. */
  private indexConnection: NatsConnection | undefined;
  private readonly layout: DataLayout;
  private readonly agents = new Map<string, Supervised>();
  private readonly kernelState: Supervised = { name: "kernel", restarts: 0, backoff: BACKOFF_MIN_MS, startedAt: 0 };
  private readonly services = new Map<string, Supervised>();
  private info!: DaemonInfo;
  private stopping = false;
  private url = "";

  constructor(private readonly opts: SupervisorOptions) {
    this.layout = dataLayout(opts.dataDir);
  }

  get natsUrl(): string {
    return this.url;
  }

  get adminClient(): AdminClient {
    if (!this.admin) throw new MaxwellError(ErrorCode.Unavailable, "daemon is not started");
    return this.admin;
  }

  async start(): Promise<DaemonInfo> {
    const { log } = this.opts;
    mkdirSync(this.layout.logs, { recursive: true });
    mkdirSync(this.layout.run, { recursive: true });
    const existing = readJson<DaemonInfo>(this.layout.daemon);
    if (existing && isProcessAlive(existing.pid) && existing.pid !== process.pid) {
      throw new MaxwellError(ErrorCode.Conflict, `a daemon is already running for ${this.layout.root} (pid ${existing.pid}, ${existing.natsUrl}); stop it first`);
    }
    if (existing) await this.stopLeftoverServer(existing);

    let version: string;
    let durability: DaemonInfo["durability"];
    let serverPid: number | undefined;
    let kernelCreds: string | undefined;
    if (this.opts.external) {
      this.url = this.opts.external.url;
      kernelCreds = this.opts.external.creds;
      version = "external";
      durability = { mode: "external", guarantee: "as configured on the external NATS server (R3 streams in a cluster replicate before the ack)" };
    } else {
      const natsLog = join(this.layout.logs, "nats-server.log");
      this.embedded = await startEmbedded({
        dataDir: this.opts.dataDir,
        ...(this.opts.host ? { host: this.opts.host } : {}),
        ...(this.opts.port !== undefined ? { port: this.opts.port } : {}),
        strict: Boolean(this.opts.strict),
        onLog: (line) => appendFileSync(natsLog, line + "\n"),
      });
      this.url = this.embedded.server.url;
      version = this.embedded.server.version.text;
      serverPid = this.embedded.server.pid;
      durability = this.embedded.durability;
      if (this.opts.strict && durability.mode !== "strict") {
        log.warn({ version }, "strict durability needs nats-server >= 2.10 (sync_interval: always); running os-buffered");
      }
      void this.embedded.server.exited.then((code) => {
        if (!this.stopping) {
          log.fatal({ code }, "nats-server exited; shutting down");
          void this.stop().then(() => process.exit(1));
        }
      });
    }
    this.info = {
      pid: process.pid,
      natsUrl: this.url,
      dataDir: this.layout.root,
      startedAt: new Date().toISOString(),
      embedded: !this.opts.external,
      server: { version, ...(serverPid !== undefined ? { pid: serverPid } : {}) },
      durability,
      kernel: { restarts: 0 },
      agents: {},
    };
    this.saveInfo();

    await this.opts.beforeKernel?.(this.url);
    await this.startKernel(kernelCreds);
    this.admin = await AdminClient.connect(this.url, this.layout.credsOf("admin"), { reconnect: true });
    await this.admin.waitForKernel();
    await this.startIndexer(kernelCreds ?? this.layout.credsOf("kernel"));
    if (this.opts.external) {
      const v = this.admin.serverVersion;
      if (v) {
        this.info.server.version = v;
        const parsed = parseServerVersion(v);
        this.info.durability = {
          mode: "external",
          guarantee: supportsSyncAlways(parsed)
            ? `nats-server ${v}: as its sync_interval and stream replicas are configured (R3 in a cluster replicates before the ack)`
            : `nats-server ${v} fsyncs every 60 s: an OS crash can lose up to 60 s of acknowledged events unless the stream is replicated`,
        };
      }
    }

    const config = this.opts.config ?? {};
    const wanted = config.services ?? SERVICES.filter((name) => existsSync(serviceEntry(name)));
    for (const name of wanted) await this.startService(name);
    if (wanted.includes("tools")) {
      // Pin the tool service's manifests: new ones are pinned, changed ones refused until re-approved.
      try {
        const r = await this.adminClient.toolRegister({ service: "tools" });
        for (const t of r.tools) if (t.status === "changed-refused") log.warn({ tool: t.name, hash: t.hash.slice(0, 12) }, "tool manifest changed since it was pinned: refused until 'maxwell tool approve'");
      } catch (err) {
        log.error({ err: (err as Error).message }, "could not pin the tool service's manifests");
      }
    }
    for (const p of config.principals ?? []) await this.ensureIdentity(p.name, "principal", p.groups ?? []);
    await this.opts.beforeAgents?.(this.url);
    for (const a of config.agents ?? []) {
      await this.ensureIdentity(a.name, "agent", a.groups ?? []);
      this.startAgent(a);
    }
    this.saveInfo();
    await this.opts.onReady?.(this.info);
    return this.info;
  }

  /**
   * A daemon killed outright leaves its nats-server running on this data dir's store (the
   * kernel, services and agents stop on their own: orphan.ts). Stops it before a new one starts,
   * if the pid the old daemon recorded is still a nats-server on this data dir's config.
   */
  private async stopLeftoverServer(previous: DaemonInfo): Promise<void> {
    const pid = previous.server.pid;
    if (pid === undefined || !isProcessAlive(pid)) return;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    } catch {
      return;
    }
    if (!cmdline.includes("nats-server") || !cmdline.includes(this.layout.natsConfig)) return;
    this.opts.log.warn({ pid }, "stopping the nats-server a previous daemon left running on this data dir");
    process.kill(pid, "SIGTERM");
    for (let waited = 0; isProcessAlive(pid); waited += 100) {
      if (waited === 10_000) process.kill(pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Follows the log into the log index. It reads the stream directly with the kernel's credential
   * (the daemon holds the data dir): through the kernel's admin reads, every event would cost the
   * kernel's process a second time.
   */
  private async startIndexer(creds: string): Promise<void> {
    const { log } = this.opts;
    let index: LogIndex;
    try {
      index = LogIndex.open(this.layout.index);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "log index unavailable: audit and replay of a trace will read the whole log");
      return;
    }
    let nc: NatsConnection;
    try {
      nc = await connectNats({ servers: this.url, creds, name: "maxwell-log-index", reconnect: true });
    } catch (err) {
      await index.close();
      log.warn({ err: (err as Error).message }, "log index: cannot read the log; audit and replay of a trace will read the whole log");
      return;
    }
    this.indexConnection = nc;
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    let failing = false;
    this.indexer = new LogIndexFollower(index, { entries: ({ from }) => readLog(js, jsm, { fromSeq: from }), entriesAt: (seqs) => readEntriesAt(jsm, seqs) }, {
      onCatchUp: (r) => {
        failing = false;
        if (r.rebuilt) log.info({ upTo: r.watermark?.seq }, "log index rebuilt (it described another log)");
      },
      onError: (err) => {
        // The kernel may be restarting: say so once, retry quietly.
        if (!failing) log.warn({ err: (err as Error).message }, "log index: catching up failed; retrying");
        failing = true;
      },
    });
    this.indexer.start();
  }

  private async ensureIdentity(name: string, kind: IdentityKind, groups: string[]): Promise<void> {
    assertName(name, `${kind} name`);
    const credsPath = this.layout.credsOf(name);
    const known = (await this.adminClient.list()).find((i) => i.name === name);
    if (known && existsSync(credsPath)) return;
    if (known) {
      throw new MaxwellError(ErrorCode.Conflict, `${kind} '${name}' is registered but its creds file ${credsPath} is missing`);
    }
    const r = await this.adminClient.register({ name, kind, groups });
    writeSecret(credsPath, r.creds);
    this.opts.log.info({ identity: name, kind, groups }, "registered");
  }

  private async startKernel(creds?: string): Promise<void> {
    const kernelLog = join(this.layout.logs, "kernel.log");
    const s = this.kernelState;
    s.startedAt = Date.now();
    this.kernel = spawnService("kernel", ["--data", this.layout.root, "--nats", this.url, ...(creds ? ["--creds", creds] : []), ...(this.opts.fork ? ["--fork"] : [])], {
      onLog: (line) => appendFileSync(kernelLog, line + "\n"),
      env: { ...withoutModelKeys(process.env), ...SUPERVISED },
      replaceEnv: true,
    });
    const k = this.kernel;
    s.child = k.child;
    this.info.kernel = { ...(k.child.pid !== undefined ? { pid: k.child.pid } : {}), restarts: s.restarts };
    void k.exited.then((code) => {
      if (this.stopping) return;
      this.opts.log.error({ code, log: kernelLog }, "kernel exited; restarting");
      this.scheduleRestart(s, () => void this.startKernel(creds).catch((err: unknown) => this.opts.log.error({ err: String(err) }, "kernel restart failed")));
    });
    await k.ready;
    this.saveInfo();
  }

  /** Starts a service behind the kernel (and restarts it with backoff when it dies). */
  private async startService(name: string): Promise<void> {
    const logFile = join(this.layout.logs, `${name}.log`);
    const s = this.services.get(name) ?? { name, restarts: 0, backoff: BACKOFF_MIN_MS, startedAt: 0 };
    this.services.set(name, s);
    s.startedAt = Date.now();
    const proc = spawnService(name, ["--data", this.layout.root, "--nats", this.url], {
      onLog: (line) => appendFileSync(logFile, line + "\n"),
      // The memory service catches up with the log before it is ready: that can take a while.
      ...(name === "memory" ? { readyTimeoutMs: 30 * 60_000 } : {}),
      // Only the model gateway may hold a model API key.
      env: name === "llm" ? SUPERVISED : { ...withoutModelKeys(process.env), ...SUPERVISED },
      replaceEnv: name !== "llm",
    });
    s.child = proc.child;
    this.info.services ??= {};
    this.info.services[name] = { ...(proc.child.pid !== undefined ? { pid: proc.child.pid } : {}), restarts: s.restarts };
    void proc.exited.then((code) => {
      if (this.stopping) return;
      this.opts.log.error({ service: name, code, log: logFile }, "service exited; restarting");
      this.scheduleRestart(s, () => void this.startService(name).catch((err: unknown) => this.opts.log.error({ service: name, err: String(err) }, "service restart failed")));
    });
    await proc.ready;
    this.opts.log.info({ service: name }, "service ready");
    this.saveInfo();
  }

  private startAgent(spec: AgentSpec): void {
    const s = this.agents.get(spec.name) ?? { name: spec.name, restarts: 0, backoff: BACKOFF_MIN_MS, startedAt: 0 };
    this.agents.set(spec.name, s);
    const [program, ...args] = spec.command.map((part, i) => this.resolveArg(part, i));
    if (!program) throw new MaxwellError(ErrorCode.BadRequest, `agent '${spec.name}' has an empty command`);
    const logFile = join(this.layout.logs, `agent-${spec.name}.log`);
    const child = spawn(program, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...withoutModelKeys(process.env),
        ...spec.env,
        MAXWELL_AGENT: spec.name,
        MAXWELL_NATS_URL: this.url,
        MAXWELL_CREDS: this.layout.credsOf(spec.name),
        ...SUPERVISED,
      },
    });
    child.stdout?.on("data", (chunk: Buffer) => appendFileSync(logFile, chunk));
    child.stderr?.on("data", (chunk: Buffer) => appendFileSync(logFile, chunk));
    s.child = child;
    s.startedAt = Date.now();
    this.info.agents[spec.name] = { ...(child.pid !== undefined ? { pid: child.pid } : {}), restarts: s.restarts, state: "running" };
    child.once("error", (err) => this.opts.log.error({ agent: spec.name, err: err.message }, "agent could not be started"));
    child.once("exit", (code, signal) => {
      if (this.stopping) return;
      void this.isKilled(spec.name).then((killed) => {
        const entry = this.info.agents[spec.name];
        if (killed) {
          // Its credential is revoked: restarting could never succeed.
          this.opts.log.warn({ agent: spec.name, code, signal }, "agent exited and was killed by an operator; not restarting");
          if (entry) entry.state = "stopped";
          this.saveInfo();
          return;
        }
        this.opts.log.warn({ agent: spec.name, code, signal, log: logFile }, "agent exited; restarting");
        if (entry) entry.state = "restarting";
        this.scheduleRestart(s, () => this.startAgent(spec));
      });
    });
    this.saveInfo();
  }

  /** Whether the kernel says `name` was killed (false when it cannot be asked). */
  private async isKilled(name: string): Promise<boolean> {
    try {
      return (await this.adminClient.list()).find((i) => i.name === name)?.control === "killed";
    } catch {
      return false;
    }
  }

  private resolveArg(part: string, index: number): string {
    if (index === 0 && (part === "node" || part === "$NODE")) return process.execPath;
    if (isAbsolute(part) || !/[/\\]/.test(part) || part.startsWith("-")) return part;
    return resolve(this.opts.configDir ?? process.cwd(), part);
  }

  private scheduleRestart(s: Supervised, restart: () => void): void {
    if (Date.now() - s.startedAt > HEALTHY_AFTER_MS) s.backoff = BACKOFF_MIN_MS;
    const delay = s.backoff;
    s.backoff = Math.min(s.backoff * 2, BACKOFF_MAX_MS);
    s.restarts += 1;
    s.timer = setTimeout(() => {
      if (!this.stopping) restart();
    }, delay);
  }

  private saveInfo(): void {
    if (!this.info) return;
    this.info.kernel.restarts = this.kernelState.restarts;
    for (const [name, s] of this.services) {
      const entry = this.info.services?.[name];
      if (entry) entry.restarts = s.restarts;
    }
    for (const [name, s] of this.agents) {
      const entry = this.info.agents[name];
      if (entry) entry.restarts = s.restarts;
    }
    mkdirSync(dirname(this.layout.daemon), { recursive: true });
    // Write and rename, so a reader (maxwell status) never sees a half-written file.
    const tmp = `${this.layout.daemon}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.info, null, 2) + "\n");
    renameSync(tmp, this.layout.daemon);
  }

  /** Stops agents, then the kernel, then nats-server; each gets SIGTERM and 10 s to drain. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const { log } = this.opts;
    for (const s of [...this.agents.values(), ...this.services.values(), this.kernelState]) if (s.timer) clearTimeout(s.timer);
    await Promise.all([...this.agents.values()].map((s) => terminate(s.child)));
    log.info("agents stopped");
    await Promise.all([...this.services.values()].map((s) => terminate(s.child)));
    if (this.services.size > 0) log.info("services stopped");
    await this.indexer?.stop().catch(() => undefined);
    await this.indexConnection?.close().catch(() => undefined);
    await this.admin?.close().catch(() => undefined);
    await terminate(this.kernel?.child);
    log.info("kernel stopped");
    if (this.embedded) {
      await this.embedded.server.stop();
      log.info("nats-server stopped");
    }
    rmSync(this.layout.daemon, { force: true });
  }
}

async function terminate(child: ChildProcess | undefined, graceMs = 10_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A daemon config file (maxwell.json), or a `bad_request` naming the file and what is wrong with it. */
export function readDaemonConfig(file: string): DaemonConfig {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as DaemonConfig;
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, `cannot read config ${file}: ${(err as Error).message}`);
  }
}

/**
 * The demo: a coordinator fanning work out to two workers, a rogue agent the policy stops, and an
 * ops agent that finds a database token in a runbook and tries to drop a table (carol approves or
 * denies; see src/runtime/demo.ts for its setup).
 */
export function demoConfig(): DaemonConfig {
  const script = (name: string) => join(packageRoot, "dist", "examples", "demo", `${name}.js`);
  return {
    principals: [{ name: "alice" }, { name: "carol", groups: ["approvers"] }],
    agents: [
      {
        name: "ops",
        command: [process.execPath, script("ops")],
        groups: ["tool-users"],
        env: { MAXWELL_DEMO_MODEL: process.env["ANTHROPIC_API_KEY"] ? "claude-haiku-4-5" : "maxwell-offline" },
      },
      { name: "coordinator", command: [process.execPath, script("coordinator")], groups: ["coordinators"] },
      { name: "worker-1", command: [process.execPath, script("worker")], groups: ["workers"] },
      { name: "worker-2", command: [process.execPath, script("worker")], groups: ["workers"] },
      { name: "rogue", command: [process.execPath, script("rogue")] },
    ],
  };
}
