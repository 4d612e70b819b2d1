/**
 * Bringing up an embedded deployment: key material, the generated nats-server config, the
 * server itself, and the kernel's and admin's credentials. Shared by `maxwell up`, `maxwell
 * init`, the tests and the benchmark, so they all run exactly what a user runs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { accountJwts, grantsFor, loadOrCreateAuthority, mintUser, writeSecret, type Authority, type Grants } from "../transport/identity.js";
import { ServiceName, serviceSubjects } from "../protocol/services.js";
import {
  durabilityOf,
  findNatsServer,
  renderServerConfig,
  startNatsServer,
  supportsSyncAlways,
  serverVersionOf,
  type RunningServer,
  type ServerVersion,
} from "../transport/nats-server.js";
import { ErrorCode, MaxwellError } from "../protocol/errors.js";
import { dataLayout, serviceEntry, type DataLayout } from "./paths.js";

export interface PrepareOptions {
  dataDir: string;
  host?: string;
  /** -1 (default) picks a free port. */
  port?: number;
  /** Ask for fsync on every write where the server supports it. */
  strict?: boolean;
  /** Override the JetStream store dir (docker-compose puts it on the server's volume). */
  storeDir?: string;
}

/** Creates keys (first run), writes the server config, mints kernel and admin creds if missing. */
export async function prepareDataDir(opts: PrepareOptions & { version: ServerVersion }): Promise<{ layout: DataLayout; authority: Authority; configText: string }> {
  const layout = dataLayout(opts.dataDir);
  mkdirSync(layout.root, { recursive: true, mode: 0o700 });
  const authority = loadOrCreateAuthority(layout.keys);
  const jwts = await accountJwts(authority, readJson<Record<string, number>>(layout.revocations) ?? {});
  const configText = renderServerConfig({
    host: opts.host ?? "127.0.0.1",
    port: opts.port ?? -1,
    storeDir: opts.storeDir ?? layout.natsStore,
    operatorJwt: jwts.operator,
    systemAccount: jwts.systemAccount,
    accounts: jwts.accounts,
    syncAlways: Boolean(opts.strict) && supportsSyncAlways(opts.version),
    maxPayload: 1024 * 1024,
  });
  await ensureCreds(layout, authority);
  return { layout, authority, configText };
}

/** Mints the kernel's, the admin CLI's and each service's credentials when they are not there yet. */
export async function ensureCreds(layout: DataLayout, authority: Authority): Promise<void> {
  const all: [string, Grants][] = [
    ["kernel", grantsFor.kernel()],
    ["admin", grantsFor.admin()],
    ...Object.values(ServiceName).map((s): [string, Grants] => [serviceSubjects.identity(s), grantsFor.service(s)]),
  ];
  for (const [name, grants] of all) {
    const path = layout.credsOf(name);
    if (existsSync(path)) continue;
    const minted = await mintUser(authority.account, `maxwell-${name}`, grants);
    writeSecret(path, minted.creds);
  }
}

export interface EmbeddedServer {
  layout: DataLayout;
  server: RunningServer;
  durability: ReturnType<typeof durabilityOf>;
}

/** Starts nats-server for a data dir (creating what is missing). */
export async function startEmbedded(opts: PrepareOptions & { onLog?: (line: string) => void }): Promise<EmbeddedServer> {
  const binary = findNatsServer();
  const version = serverVersionOf(binary);
  const { layout, configText } = await prepareDataDir({ ...opts, version });
  const server = await startNatsServer({ binary, configPath: layout.natsConfig, configText, ...(opts.onLog ? { onLog: opts.onLog } : {}) });
  return { layout, server, durability: durabilityOf(version, Boolean(opts.strict)) };
}

export interface ServiceProcess {
  child: ChildProcess;
  /** Resolves once the service printed its ready line. */
  ready: Promise<void>;
  exited: Promise<number | null>;
}

/**
 * Spawns a built service (`dist/services/<name>/main.js`) and waits for its `<name> ready` line.
 * Its stderr (JSON logs) goes to `onLog`.
 */
export function spawnService(name: string, args: string[], opts: { env?: NodeJS.ProcessEnv; /** Use `env` as the whole environment. */ replaceEnv?: boolean; onLog?: (line: string) => void; readyTimeoutMs?: number } = {}): ServiceProcess {
  const entry = serviceEntry(name);
  if (!existsSync(entry)) {
    throw new MaxwellError(ErrorCode.Unavailable, `${entry} is missing: run 'npm run build' first`);
  }
  const child = spawn(process.execPath, ["--enable-source-maps", entry, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: opts.replaceEnv ? { ...opts.env } : { ...process.env, ...opts.env },
  });
  // "close" comes after the output streams end, so the last log line is read before we report.
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  let lastProblem: string | undefined;
  if (child.stderr) {
    createInterface({ input: child.stderr }).on("line", (line) => {
      opts.onLog?.(line);
      // Keep the last error a service logged, to say why it died.
      try {
        const entry = JSON.parse(line) as { level?: number; msg?: string; err?: string };
        if ((entry.level ?? 0) >= 50) lastProblem = [entry.msg, entry.err].filter(Boolean).join(": ");
      } catch {
        if (line.trim()) lastProblem = line.trim();
      }
    });
  }
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new MaxwellError(ErrorCode.Unavailable, `${name} did not become ready within ${opts.readyTimeoutMs ?? 30000} ms`)), opts.readyTimeoutMs ?? 30000);
    if (child.stdout) {
      createInterface({ input: child.stdout }).on("line", (line) => {
        if (line.trim() === `${name} ready`) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new MaxwellError(ErrorCode.Unavailable, `${name} exited with code ${String(code)} before it was ready${lastProblem ? `: ${lastProblem}` : ""}`));
    });
  });
  ready.catch(() => undefined);
  return { child, ready, exited };
}

/** Reads a JSON file, or undefined when it is missing or unreadable. */
export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}
