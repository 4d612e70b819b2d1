/**
 * `maxwell replay fork --at SEQ --code PATH --agent NAME`: replays agent NAME's new code against
 * the log up to SEQ, then lets it carry on live from there in a sandboxed data directory (keys of
 * its own, the offline model, no external effects), to try a fix against a real history without
 * touching production (docs/replay.md, "Fork").
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { ErrorCode, MaxwellError, decodeEntry, subjects, type LogEvent, type StoredEntry } from "../../protocol/mod.js";
import { copySandboxFiles, inFlightAt, sandboxConfig, seedLog } from "../../runtime/fork.js";
import { createLogger } from "../../runtime/logger.js";
import { dataLayout } from "../../runtime/paths.js";
import { Supervisor, demoConfig, readDaemonConfig, type DaemonConfig } from "../../runtime/supervisor.js";
import { connectNats } from "../../transport/connection.js";
import type { AgentDefinition } from "../../sdk/agent.js";
import { formatReplayReport, replayAgent } from "../../sdk/replay.js";
import { formatEvent } from "../format.js";
import { ExitCode, cliContext, fail, type GlobalOptions } from "../context.js";
import { loadDefinition } from "./replay.js";

const HELP = `
The fork:
  1. check   replays NAME's new code against its deliveries up to SEQ and prints the result
             (identical, or the first divergence); informational, the fork goes on either way
  2. sandbox a new data dir (--into, or a fresh one under the temp dir) with keys of its own:
             the log's entries #1..#SEQ copied verbatim, the policy file, memory sealing keys,
             the tool workspace and demo database; never production's keys, credentials or
             secrets; MCP servers and the http-fetch allowlist left out (--allow-external keeps
             them); the model is always the offline one
  3. live    the sandbox daemon runs the config's agents, NAME with the new code; its kernel
             appends a kernel.fork event (handing the log over to its own key), and work that
             was in flight at SEQ is delivered again
  4. report  events after SEQ are printed as they are appended, until the log has been quiet for
             --idle ms (or --for ms passed, or Ctrl-C); with --keep it runs until Ctrl-C

Exit codes:
  0  the fork ran (whatever the check said)
  2  usage error (bad options, --into not empty)
  1  any other failure (no log, --at past its end, an agent not registered by SEQ, code that
     cannot be loaded, a sandbox that would not start)`;

interface ForkOptions {
  at: string;
  code: string;
  agent: string;
  into?: string;
  config?: string;
  idle: string;
  for?: string;
  keep?: boolean;
  allowExternal?: boolean;
}

interface ForkArgs {
  at: number;
  code: string;
  agent: string;
  into?: string;
  config?: string;
  idleMs: number;
  forMs?: number;
  keep: boolean;
  allowExternal: boolean;
}

/** How long to wait for the agents to connect before the quiet clock starts anyway. */
const AGENTS_UP_MS = 20_000;
const POLL_MS = 200;

export function registerReplayFork(replay: Command, globals: () => GlobalOptions): void {
  replay
    .command("fork")
    .description("replay up to SEQ, then let new code for agent NAME carry on live in a sandboxed data dir (own keys, offline model, no external effects)")
    .requiredOption("--at <seq>", "the last log entry the fork takes over")
    .requiredOption("--code <path>", "the agent module NAME runs in the fork (.js, or .ts with tsx installed)")
    .requiredOption("--agent <name>", "the agent whose code is replaced")
    .option("--into <dir>", "the sandbox data dir (must not exist or be empty; default: a new one under the temp dir)")
    .option("--config <file>", "daemon config naming the agents (default: <data>/maxwell.json, then the demo config)")
    .option("--idle <ms>", "stop once the sandbox's log has been quiet this long", "3000")
    .option("--for <ms>", "stop after this long at most")
    .option("--keep", "keep the sandbox running until Ctrl-C")
    .option("--allow-external", "keep MCP servers and the http-fetch allowlist in the sandbox's tools.json")
    .addHelpText("after", HELP)
    .action(async (opts: ForkOptions) => {
      let args: ForkArgs;
      try {
        args = forkArgs(opts);
      } catch (err) {
        fail(err, ExitCode.Usage);
      }
      try {
        await runFork(globals(), args);
      } catch (err) {
        fail(err);
      }
    });
}

function positive(flag: string, value: string, what: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new MaxwellError(ErrorCode.BadRequest, `${flag} must be ${what} (1 or more), not '${value}'`);
  return n;
}

function forkArgs(opts: ForkOptions): ForkArgs {
  const args: ForkArgs = {
    at: positive("--at", opts.at, "a log sequence"),
    code: resolve(opts.code),
    agent: opts.agent,
    idleMs: positive("--idle", opts.idle, "a number of milliseconds"),
    keep: Boolean(opts.keep),
    allowExternal: Boolean(opts.allowExternal),
  };
  if (opts.for !== undefined) args.forMs = positive("--for", opts.for, "a number of milliseconds");
  if (opts.config !== undefined) args.config = resolve(opts.config);
  if (opts.into !== undefined) {
    const into = resolve(opts.into);
    if (existsSync(into) && readdirSync(into).length > 0) throw new MaxwellError(ErrorCode.Conflict, `--into ${into} exists and is not empty: a sandbox needs a new directory`);
    args.into = into;
  }
  return args;
}

/** The parent's config (its file, or the demo's) and the folder its relative paths start from. */
function parentConfig(defaultFile: string, flag: string | undefined): { config: DaemonConfig; dir: string } {
  const file = flag ?? (existsSync(defaultFile) ? defaultFile : undefined);
  if (file === undefined) return { config: demoConfig(), dir: process.cwd() };
  return { config: readDaemonConfig(file), dir: dirname(file) };
}

async function runFork(g: GlobalOptions, args: ForkArgs): Promise<void> {
  const ctx = cliContext(g);
  if (args.into !== undefined && resolve(args.into) === resolve(ctx.layout.root)) throw new MaxwellError(ErrorCode.BadRequest, "--into is the data directory itself");
  // The sandbox runs the offline model whatever this shell holds: no process of it sees a key.
  for (const k of Object.keys(process.env)) if (k.startsWith("ANTHROPIC_")) delete process.env[k];
  const parent = parentConfig(ctx.layout.config, args.config);

  // Load the new code first: code that does not load stops here, before anything is made.
  // With the agent's deployed environment (the module may read it at load time), as replay does.
  const spec = parent.config.agents?.find((a) => a.name === args.agent);
  const env = { ...spec?.env, MAXWELL_AGENT: args.agent, MAXWELL_REPLAY: "1" };
  const saved = new Map(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  let def: AgentDefinition;
  try {
    def = await loadDefinition(args.code);
  } finally {
    // The sandbox's processes inherit this environment: none may think it is replaying, or be NAME.
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }

  const { prefix, events, lastSeq } = await readParentLog(ctx, args.at);
  const flight = inFlightAt(events, args.at);
  const agent = flight.agents.get(args.agent);
  if (!agent) throw new MaxwellError(ErrorCode.NotFound, `agent '${args.agent}' is not registered in the log by #${args.at}`);
  if (agent.killed) throw new MaxwellError(ErrorCode.Conflict, `agent '${args.agent}' was killed before #${args.at}: a killed agent cannot run in a fork`);

  // 1. check
  const report = await replayAgent(def, events.filter((e) => e.seq <= args.at), { name: args.agent });
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  if (report.identical) {
    out(`check: identical through #${args.at}: ${report.syscalls} syscall${report.syscalls === 1 ? "" : "s"} matched over ${report.deliveries} deliver${report.deliveries === 1 ? "y" : "ies"}`);
  } else {
    out(`check: the new code diverges from the log before #${args.at} (the fork goes on):`);
    for (const line of formatReplayReport(report).split("\n")) out(`  ${line}`);
  }

  // 2. sandbox (its log is seeded on the sandbox's own server, just before its kernel starts)
  const dir = args.into ?? mkdtempSync(join(tmpdir(), "maxwell-fork-"));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const sandbox = dataLayout(dir);
  const files = copySandboxFiles(ctx.layout, sandbox, { allowExternal: args.allowExternal });
  const killed = new Set([...flight.agents].filter(([, a]) => a.killed).map(([name]) => name));
  const config = sandboxConfig(parent.config, parent.dir, args.agent, args.code, { groups: agent.groups, killed });
  writeFileSync(sandbox.config, JSON.stringify(config, null, 2) + "\n");
  out(`sandbox ${dir}`);
  const seed = async (url: string): Promise<void> => {
    const seeded = await seedLog(url, sandbox.credsOf("kernel"), prefix, [...flight.agents.keys()], flight.redeliver);
    out(`  log #1..#${args.at} copied verbatim (${seeded.copied} entries; production's log ends at #${lastSeq})`);
    if (files.copied.length > 0) out(`  copied: ${files.copied.join("; ")}`);
    out(`  not copied: ${files.left.join("; ")}`);
    const again = Object.entries(seeded.redelivered);
    out(`  in flight at #${args.at}, delivered again: ${again.length === 0 ? "nothing" : again.map(([a, seqs]) => `${a} ${seqs.map((s) => `#${s}`).join(",")}`).join("; ")}`);
    out(`  agent ${args.agent} runs ${args.code}; the model is the offline one`);
  };

  // 3. live
  await runSandbox(dir, config, args, seed, out);
  out("");
  out(`the sandbox is stopped; look at it with:`);
  out(`  maxwell --data ${dir} log --from ${args.at + 1}`);
  out(`  maxwell --data ${dir} verify`);
  out(`  maxwell --data ${dir} audit trace TRACE`);
  out(`  maxwell --data ${dir} replay agent ${args.agent}`);
  out(`  maxwell --data ${dir} up            (to run it again)`);
  process.stdout.write("", () => process.exit(0));
}

/** Production's log: the entries up to `at` (to copy), and every event (to judge what was in flight). */
async function readParentLog(ctx: ReturnType<typeof cliContext>, at: number): Promise<{ prefix: StoredEntry[]; events: LogEvent[]; lastSeq: number }> {
  const source = await ctx.openLog("fork");
  const prefix: StoredEntry[] = [];
  const events: LogEvent[] = [];
  try {
    const lastSeq = await source.lastSeq();
    if (at > lastSeq) throw new MaxwellError(ErrorCode.BadRequest, `--at ${at} is past the end of the log (last sequence ${lastSeq})`);
    for await (const entry of source.entries({ from: 1, follow: false })) {
      if (entry.seq > lastSeq) break;
      events.push(decodeEntry(entry));
      if (entry.seq <= at) prefix.push({ seq: entry.seq, subject: entry.subject, data: entry.data });
    }
    if (prefix.length !== at) throw new MaxwellError(ErrorCode.Internal, `read ${prefix.length} entries up to #${at}: the log has gaps (run 'maxwell verify')`);
    return { prefix, events, lastSeq };
  } finally {
    await source.close();
  }
}

/** Runs the sandbox's daemon, printing its new events, until it is quiet, time is up, or Ctrl-C. */
async function runSandbox(dir: string, config: DaemonConfig, args: ForkArgs, seed: (url: string) => Promise<void>, out: (line: string) => void): Promise<void> {
  const log = createLogger("maxwell-fork");
  const sandbox = dataLayout(dir);
  const names = (config.agents ?? []).map((a) => a.name);
  const up = new Set<string>();
  let watcher: Awaited<ReturnType<typeof connectNats>> | undefined;
  const supervisor = new Supervisor({
    dataDir: dir,
    config,
    configDir: dir,
    fork: true,
    log,
    beforeKernel: seed,
    // An agent is up once it says anything to the kernel (its first word is asking for redeliveries).
    beforeAgents: async (url) => {
      watcher = await connectNats({ servers: url, creds: sandbox.credsOf("kernel"), name: "maxwell-fork:watch", reconnect: false });
      for (const name of names) watcher.subscribe(subjects.syscallsOf(name), { max: 1, callback: () => void up.add(name) });
      await watcher.flush();
    },
  });
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    await supervisor.start();
    const admin = supervisor.adminClient;
    const started = Date.now();
    let next = args.at + 1;
    let quietSince = Date.now();
    let agentsUpAt: number | undefined;
    for (;;) {
      const batch = await admin.read({ from: next, max: 1000 });
      for (const entry of batch.entries) out(formatEvent(decodeEntry(entry)));
      const last = batch.entries.at(-1);
      if (last) {
        next = last.seq + 1;
        quietSince = Date.now();
      }
      if (batch.entries.length > 0 && next <= batch.lastSeq) continue;
      const now = Date.now();
      if (agentsUpAt === undefined && (names.every((n) => up.has(n)) || now - started > AGENTS_UP_MS)) {
        agentsUpAt = now;
        if (!names.every((n) => up.has(n))) out(`(agents ${names.filter((n) => !up.has(n)).join(", ")} did not connect within ${AGENTS_UP_MS / 1000} s; see ${sandbox.logs})`);
      }
      if (interrupted) break;
      if (args.forMs !== undefined && now - started >= args.forMs) break;
      if (!args.keep && agentsUpAt !== undefined && now - Math.max(quietSince, agentsUpAt) >= args.idleMs) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await watcher?.close().catch(() => undefined);
    await supervisor.stop();
  }
}
