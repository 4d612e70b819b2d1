/**
 * `maxwell replay agent NAME`: re-runs an agent's code (the deployed version or a new one)
 * against the log, with every input served from it and nothing called or sent, and reports
 * whether it issues exactly the syscalls the log recorded. Exit codes make it a CI gate for agent
 * code changes (docs/replay.md).
 */
import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Command } from "commander";
import { ErrorCode, MaxwellError, decodeEntry, resolveBlobs, subjects, type LogEvent } from "../../protocol/mod.js";
import { LogIndex, indexedAgentEntries, indexedReplayEntries } from "../../runtime/log-index.js";
import { createLogger } from "../../runtime/logger.js";
import { packageRoot } from "../../runtime/paths.js";
import { demoConfig, readDaemonConfig, type AgentSpec } from "../../runtime/supervisor.js";
import type { AgentDefinition } from "../../sdk/agent.js";
import { formatReplayReport, replayAgent, type ReplayOptions } from "../../sdk/replay.js";
import { ExitCode, cliContext, fail, type GlobalOptions } from "../context.js";

/** Exit code when the code diverges from the log. */
export const REPLAY_DIVERGED = 4;

const EXIT_CODES = `
Exit codes:
  0  identical: every syscall the code issued matched the log
  4  divergence: the code issued something else, less or more than the log recorded
  2  usage error (bad options)
  1  any other failure (no log, no such agent, code that cannot be loaded)

The code is an ES module whose default export is the agent definition
(\`export default defineAgent({...})\`); its top-level \`await main(def)\` returns at once under
replay (MAXWELL_REPLAY=1). Without --code, the agent's command in <data>/maxwell.json (or the demo
config) names the module. See docs/replay.md.`;

interface ReplayAgentOptions {
  trace?: string;
  from?: string;
  to?: string;
  code?: string;
  config?: string;
  json?: boolean;
  verbose?: boolean;
  timeout?: string;
  scan?: boolean;
}

/** Registers `maxwell replay` and its `agent` subcommand; returns the `replay` command for more. */
export function registerReplay(program: Command, globals: () => GlobalOptions): Command {
  const replay = program.command("replay").description("re-run recorded work: agent code against the log, with nothing called or sent");
  replay
    .command("agent")
    .argument("<name>", "the agent whose deliveries are replayed")
    .description("re-run agent NAME's handler on each delivery it got, serving every syscall answer from the log, and compare what it issues with what the log recorded")
    .option("--trace <id>", "only deliveries of this trace (a prefix is enough)")
    .option("--from <seq>", "only deliveries at or after this log sequence")
    .option("--to <seq>", "only deliveries at or before this log sequence")
    .option("--code <path>", "the agent module to run (.js, or .ts with tsx installed); default: the agent's command in the config")
    .option("--config <file>", "daemon config naming the agent's command (default: <data>/maxwell.json, then the demo config)")
    .option("--timeout <ms>", "give up on a handler that runs this long without finishing (default 30000)")
    .option("--verbose", "show the agent's own log lines")
    .option("--json", "print the report as JSON")
    .option("--scan", "read the whole log instead of the log index (<data>/index)")
    .addHelpText("after", EXIT_CODES)
    .action(async (name: string, opts: ReplayAgentOptions) => {
      let options: ReplayOptions;
      try {
        options = replayOptions(name, opts);
      } catch (err) {
        fail(err, ExitCode.Usage);
      }
      try {
        await runReplay(globals(), options, opts);
      } catch (err) {
        fail(err);
      }
    });
  return replay;
}

function seqOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new MaxwellError(ErrorCode.BadRequest, `${flag} must be a log sequence (1 or more), not '${value}'`);
  return n;
}

function replayOptions(name: string, opts: ReplayAgentOptions): ReplayOptions {
  const from = seqOption("--from", opts.from);
  const to = seqOption("--to", opts.to);
  if (opts.trace !== undefined && (from !== undefined || to !== undefined)) {
    throw new MaxwellError(ErrorCode.BadRequest, "choose the deliveries by --trace or by --from/--to, not both");
  }
  if (opts.trace !== undefined && !/^[0-9a-f]{1,32}$/.test(opts.trace)) throw new MaxwellError(ErrorCode.BadRequest, `--trace must be a trace id (or a prefix of one): lowercase hex, not '${opts.trace}'`);
  if (from !== undefined && to !== undefined && from > to) throw new MaxwellError(ErrorCode.BadRequest, `--from ${from} is after --to ${to}`);
  const out: ReplayOptions = { name };
  if (opts.trace !== undefined) out.trace = opts.trace;
  if (from !== undefined) out.from = from;
  if (to !== undefined) out.to = to;
  if (opts.timeout !== undefined) {
    const ms = Number(opts.timeout);
    if (!Number.isInteger(ms) || ms < 1) throw new MaxwellError(ErrorCode.BadRequest, `--timeout must be a number of milliseconds, not '${opts.timeout}'`);
    out.handlerTimeoutMs = ms;
  }
  return out;
}

async function runReplay(g: GlobalOptions, options: ReplayOptions, opts: ReplayAgentOptions): Promise<void> {
  const ctx = cliContext(g);
  const spec = agentSpec(ctx.layout.config, options.name, opts.config);
  const path = opts.code !== undefined ? resolve(opts.code) : spec ? modulePath(spec.spec, spec.dir) : undefined;
  if (path === undefined) {
    throw new MaxwellError(ErrorCode.NotFound, `no command for agent '${options.name}' in ${opts.config ?? ctx.layout.config} or the demo config: pass --code PATH`);
  }
  // The deployed environment, as the supervisor gives it (the module may read it at load time).
  for (const [k, v] of Object.entries(spec?.spec.env ?? {})) process.env[k] = v;
  process.env["MAXWELL_AGENT"] = options.name;
  const def = await loadDefinition(path);

  const { events, mentioned } = opts.scan
    ? await readAllEvents(ctx, options.name, options.from ?? 1)
    : await readIndexed(ctx, options.name, options.trace !== undefined ? { trace: options.trace } : { from: options.from ?? 1 });
  if (!mentioned) {
    throw new MaxwellError(ErrorCode.NotFound, `agent '${options.name}' appears nowhere in the log${options.from !== undefined ? ` from #${options.from}` : ""}`);
  }
  if (opts.verbose) options.log = createLogger(`replay:${options.name}`, "debug");
  const report = await replayAgent(def, events, options);
  const text = opts.json ? JSON.stringify({ ...report, code: path }, null, 2) : formatReplayReport(report);
  const code = report.identical ? 0 : REPLAY_DIVERGED;
  // The agent's module may hold handles of its own: exit once the report is out.
  process.stdout.write(`${text}\n`, () => process.exit(code));
}

function mentions(e: LogEvent, name: string): boolean {
  const r = e as unknown as Record<string, unknown>;
  return r["actor"] === name || r["to"] === name || r["name"] === name;
}

/** The events replay reads, and whether the agent appears anywhere in the log. */
interface ReplayInput {
  events: LogEvent[];
  mentioned: boolean;
}


/** The whole log from `from` on. */
async function readAllEvents(ctx: ReturnType<typeof cliContext>, name: string, from: number): Promise<ReplayInput> {
  const source = await ctx.openLog("replay");
  const events: LogEvent[] = [];
  const blobs = new Map<number, Uint8Array>();
  try {
    for await (const entry of source.entries({ from, follow: false })) {
      events.push(decodeEntry(entry));
      if (entry.subject === subjects.logBlob()) blobs.set(entry.seq, entry.data);
    }
    // Replay serves requests and results as the agent saw them: parts stored by hash go back in place.
    return { events: await resolveBlobs(events, (seqs) => source.entriesAt(seqs), blobs), mentioned: events.some((e) => mentions(e, name)) };
  } finally {
    await source.close();
  }
}

/**
 * Only what the replay needs, found through the log index: for `trace`, the events of the traces
 * the prefix names, the decisions on their holds and the agent's rejected syscalls; otherwise
 * what the agent did and was delivered from `from` on. Fails on an entry that does not decode
 * anywhere in the log, as the full read does.
 */
async function readIndexed(ctx: ReturnType<typeof cliContext>, name: string, what: { trace: string } | { from: number }): Promise<ReplayInput> {
  let index: LogIndex;
  try {
    index = LogIndex.open(ctx.layout.index);
  } catch (err) {
    process.stderr.write(`warning: ${(err as Error).message}; reading the whole log\n`);
    return readAllEvents(ctx, name, "from" in what ? what.from : 1);
  }
  const source = await ctx.openLog("replay").catch(async (err: unknown) => {
    await index.close();
    throw err;
  });
  try {
    await index.catchUp(source);
    const [undecodable] = index.undecodable();
    if (undecodable !== undefined) throw new MaxwellError(ErrorCode.Internal, `log entry #${undecodable} cannot be decoded (run 'maxwell verify')`);
    const entries = "trace" in what ? await indexedReplayEntries(index, source, name, what.trace) : await indexedAgentEntries(index, source, name, what.from);
    const events = entries.map(decodeEntry);
    // As the full read decides it: from the start, anywhere in the log; from a later seq, after it.
    const mentioned = "from" in what && what.from > 1 ? events.some((e) => mentions(e, name)) : index.mentions(name);
    return { events: await resolveBlobs(events, (seqs) => source.entriesAt(seqs)), mentioned };
  } finally {
    await source.close();
    await index.close();
  }
}

/** The agent's entry in the config (or the demo's), and the folder its relative paths start from. */
function agentSpec(defaultConfig: string, name: string, configFlag: string | undefined): { spec: AgentSpec; dir: string } | undefined {
  const file = configFlag ?? (existsSync(defaultConfig) ? defaultConfig : undefined);
  if (file !== undefined) {
    const config = readDaemonConfig(file);
    const spec = config.agents?.find((a) => a.name === name);
    if (spec) return { spec, dir: dirname(resolve(file)) };
    if (configFlag !== undefined) return undefined;
  }
  const demo = demoConfig().agents?.find((a) => a.name === name);
  return demo ? { spec: demo, dir: process.cwd() } : undefined;
}

/** The module an agent's command runs: its first argument that names a .js or .ts file. */
function modulePath(spec: AgentSpec, dir: string): string {
  const script = spec.command.find((part) => !part.startsWith("-") && /\.(m|c)?(j|t)s$/.test(part));
  if (script === undefined) {
    throw new MaxwellError(ErrorCode.NotFound, `the command of agent '${spec.name}' (${spec.command.join(" ")}) names no .js or .ts module: pass --code PATH`);
  }
  return isAbsolute(script) ? script : resolve(dir, script);
}

/** Imports an agent module (without connecting: MAXWELL_REPLAY=1) and returns its default export. */
export async function loadDefinition(path: string): Promise<AgentDefinition> {
  if (!existsSync(path)) throw new MaxwellError(ErrorCode.NotFound, `agent code ${path} not found`);
  process.env["MAXWELL_REPLAY"] = "1";
  let mod: { default?: unknown };
  try {
    mod = /\.(m|c)?ts$/.test(path) ? await importTypeScript(path) : ((await import(pathToFileURL(path).href)) as { default?: unknown });
  } catch (err) {
    if (err instanceof MaxwellError) throw err;
    const message = (err as Error).message;
    // tsx compiles a .ts file outside a `"type": "module"` package as CommonJS.
    const hint = /top-level await.*cjs/i.test(message) ? ` (a .ts file outside a package with "type": "module" is CommonJS: name it .mts)` : "";
    throw new MaxwellError(ErrorCode.BadRequest, `cannot load agent code ${path}: ${message}${hint}`, { cause: err });
  }
  const def = mod.default as Partial<AgentDefinition> | undefined;
  if (typeof def !== "object" || def === null || typeof def.onMessage !== "function") {
    throw new MaxwellError(ErrorCode.BadRequest, `${path} has no default export with an onMessage handler: end the module with 'export default defineAgent({...})'`);
  }
  return def as AgentDefinition;
}

/** A .ts module through tsx when it is installed, else its build under dist/. */
async function importTypeScript(path: string): Promise<{ default?: unknown }> {
  let tsImport: ((specifier: string, parent: string) => Promise<unknown>) | undefined;
  try {
    ({ tsImport } = (await import("tsx/esm/api")) as { tsImport: (specifier: string, parent: string) => Promise<unknown> });
  } catch {
    tsImport = undefined;
  }
  if (tsImport) return (await tsImport(pathToFileURL(path).href, import.meta.url)) as { default?: unknown };
  const rel = relative(packageRoot, path);
  const built = rel.startsWith("..") || isAbsolute(rel) ? undefined : join(packageRoot, "dist", rel.replace(/\.(m|c)?ts$/, ".js"));
  if (built === undefined || !existsSync(built)) {
    throw new MaxwellError(ErrorCode.BadRequest, `${path} is TypeScript and tsx is not installed: build it and pass the .js with --code`);
  }
  return (await import(pathToFileURL(built).href)) as { default?: unknown };
}
