/**
 * Test harness: a real deployment in a temp dir. nats-server on a free port, the built kernel as
 * its own process (so tests can kill -9 it), the admin client, and helpers to register agents and
 * run them in-process with their own credentials.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { findNatsServer, startNatsServer } from "../../src/transport/nats-server.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdminClient } from "../../src/runtime/admin-client.js";
import { spawnService, startEmbedded, type EmbeddedServer, type ServiceProcess } from "../../src/runtime/deployment.js";
import type { DataLayout } from "../../src/runtime/paths.js";
import type { RegisterResult } from "../../src/runtime/admin.js";
import { MaxwellError, defineAgent, runAgent, type AgentContext, type AgentDefinition, type RunningAgent } from "../../src/sdk/mod.js";
import { decodeMap, type LogEvent } from "../../src/protocol/mod.js";
import { createLogger } from "../../src/runtime/logger.js";

export interface Harness {
  dir: string;
  layout: DataLayout;
  url: string;
  embedded: EmbeddedServer;
  admin: AdminClient;
  kernel: ServiceProcess;
  kernelLog: string[];
  startKernel(): Promise<void>;
  killKernel(signal?: NodeJS.Signals): Promise<void>;
  /** Kills nats-server with SIGKILL and starts it again on the same port and store. */
  crashServer(): Promise<void>;
  register(name: string, kind?: "agent" | "principal", groups?: string[]): Promise<RegisterResult>;
  agent(def: AgentDefinition, creds: string, name?: string): Promise<RunningAgent>;
  close(): Promise<void>;
}

const quiet = createLogger("test-agent", process.env["MAXWELL_TEST_LOG"] ?? "silent");

/**
 * Harnesses not closed yet. If a test file ends without closing one (a hook timed out), its
 * kernel and nats-server are killed when the test process exits rather than left running.
 */
const open = new Set<Harness>();
process.once("exit", () => {
  for (const h of open) {
    h.kernel?.child.kill("SIGKILL");
    h.embedded?.server.process.kill("SIGKILL");
  }
});

export async function startHarness(opts: { policies?: string; kernelArgs?: string[] } = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "maxwell-test-"));
  const embedded = await startEmbedded({ dataDir: dir });
  const layout = embedded.layout;
  if (opts.policies !== undefined) writeFileSync(layout.policies, opts.policies);
  const url = embedded.server.url;
  const agents: RunningAgent[] = [];
  const kernelLog: string[] = [];
  const h: Harness = {
    dir,
    layout,
    url,
    embedded,
    admin: undefined as unknown as AdminClient,
    kernel: undefined as unknown as ServiceProcess,
    kernelLog,
    async startKernel() {
      h.kernel = spawnService("kernel", ["--data", dir, "--nats", url, ...(opts.kernelArgs ?? [])], {
        onLog: (line) => kernelLog.push(line),
      });
      await h.kernel.ready;
    },
    async killKernel(signal: NodeJS.Signals = "SIGKILL") {
      h.kernel.child.kill(signal);
      await h.kernel.exited;
    },
    async crashServer() {
      const port = h.embedded.server.port;
      h.embedded.server.process.kill("SIGKILL");
      await h.embedded.server.exited;
      const configText = readFileSync(layout.natsConfig, "utf8").replace(/listen: "([^":]+):-?\d+"/, `listen: "$1:${port}"`);
      h.embedded.server = await startNatsServer({ binary: findNatsServer(), configPath: layout.natsConfig, configText });
    },
    async register(name, kind = "agent", groups = []) {
      const r = await h.admin.register({ name, kind, groups });
      return r;
    },
    async agent(def, creds, name) {
      const a = await runAgent(def, { servers: url, creds: new TextEncoder().encode(creds), log: quiet, ...(name ? { name } : {}) });
      agents.push(a);
      return a;
    },
    async close() {
      await Promise.allSettled(agents.map((a) => a.stop()));
      await h.admin?.close().catch(() => undefined);
      if (h.kernel && h.kernel.child.exitCode === null && h.kernel.child.signalCode === null) {
        h.kernel.child.kill("SIGTERM");
        await h.kernel.exited;
      }
      await h.embedded.server.stop();
      open.delete(h);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  open.add(h);
  await h.startKernel();
  h.admin = await AdminClient.connect(url, layout.credsOf("admin"), { reconnect: true });
  await h.admin.waitForKernel();
  return h;
}

/** Resolves when `predicate` holds, polling an in-memory condition (never a fixed sleep). */
export async function until(predicate: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves when the async `check` holds, re-checking it until `timeoutMs` (for CLI output). */
export async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every event in the log, decoded, read through the kernel. */
export async function logEvents(h: Harness): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  for await (const e of h.admin.entries(1)) out.push(decodeMap(e.data) as unknown as LogEvent);
  return out;
}

/**
 * An agent that runs `work` for each delivered message and keeps its outcome (the value, or the
 * error's code and message) in `outcomes` under the message body's `tag`.
 */
export function recordingAgent(outcomes: Map<string, unknown>, work: (body: { tag: string; [k: string]: unknown }, ctx: AgentContext) => Promise<unknown>): AgentDefinition {
  return defineAgent({
    concurrency: 4,
    async onMessage(msg, ctx) {
      const body = msg.body as { tag: string };
      outcomes.set(
        body.tag,
        await work(body, ctx).catch((err: unknown) => ({ error: err instanceof MaxwellError ? err.code : String(err), message: (err as Error).message })),
      );
    },
  });
}
