/**
 * A fork's sandbox (`maxwell replay fork`): a new data directory with keys of its own, whose log
 * starts as a verbatim copy of another log's first entries, so new agent code can carry on live
 * from there without touching the original. This module prepares it; the daemon (Supervisor with
 * `fork: true`) then runs it, and its kernel hands the log over to its own key with a
 * `kernel.fork` event (see docs/replay.md, "Fork").
 *
 * What is copied: the log up to the cut, the policy file, memory sealing keys (so earlier memory
 * stays readable), the tool service's workspace and demo database as they are now, and its
 * configuration without anything that reaches outside (MCP servers, the fetch allowlist) unless
 * asked. What is not: the operator, account and kernel keys (a fork must never be able to sign
 * as its parent), credentials, the secret store, snapshots, the memory store (rebuilt from the
 * log), revocations and the checkpoint anchor.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { ErrorCode, EventType, LOG_STREAM, MaxwellError, consumers, type EventId, type LogEvent, type StoredEntry } from "../protocol/mod.js";
import { connectNats, ensureAgentConsumers, ensureLogStream, jetstreamManager } from "../transport/connection.js";
import { appendVerbatim, settleDurable } from "../transport/log-copy.js";
import { startEmbedded } from "./deployment.js";
import { dataLayout, type DataLayout } from "./paths.js";
import type { AgentSpec, DaemonConfig } from "./supervisor.js";

/** The scope (delivery event id, or an `onStart` run's scope) of a syscall id `<scope>:<step>`. */
function scopeOf(syscall: string): string {
  const i = syscall.lastIndexOf(":");
  return i < 0 ? syscall : syscall.slice(0, i);
}

/** Who owes what at the cut: which deliveries at or before it are delivered again in the sandbox. */
export interface InFlight {
  /** Sequences of message deliveries (sends and requests) at or before the cut still being worked on at it. */
  redeliver: Set<number>;
  /** Agents registered by the cut, and whether an operator had killed them. */
  agents: Map<string, { killed: boolean; groups: string[] }>;
}

/**
 * Which deliveries were in flight at `at`, judged with hindsight from the whole log: a message
 * delivered at or before the cut is in flight when the log shows its recipient still working on
 * it after the cut (a syscall of its handler, the outcome of an effect or the decision on a hold
 * it waited for, the reply to a request it had made or to the request itself). Acknowledgements
 * are not logged, so a delivery whose handler did nothing after the cut counts as finished.
 */
export function inFlightAt(events: Iterable<LogEvent>, at: number): InFlight {
  const deliveries = new Map<string, { seq: number; to: string }>();
  /** Request event id → who asked, and the scope of the handler that asked. */
  const requests = new Map<EventId, { actor: string; scope: string }>();
  /** Held syscall → who holds, and the scope of the handler waiting on it. */
  const holds = new Map<EventId, { actor: string; scope: string }>();
  const agents = new Map<string, { killed: boolean; groups: string[] }>();
  const redeliver = new Set<number>();
  const working = (actor: string, scope: string): void => {
    const d = deliveries.get(scope);
    if (d && d.to === actor) redeliver.add(d.seq);
  };
  for (const e of events) {
    if (e.seq <= at) {
      if (e.type === EventType.Message) {
        deliveries.set(e.id, { seq: e.seq, to: e.to });
        if (e.kind === "request") requests.set(e.id, { actor: e.actor, scope: scopeOf(e.syscall) });
      } else if (e.type === EventType.ApprovalRequested) {
        holds.set(e.id, { actor: e.actor, scope: scopeOf(e.syscall) });
      } else if (e.type === EventType.IdentityRegistered && e.kind === "agent") {
        agents.set(e.name, { killed: false, groups: e.groups });
      } else if (e.type === EventType.AgentControlled && e.state === "killed") {
        const a = agents.get(e.agent);
        if (a) a.killed = true;
      }
      continue;
    }
    if ("syscall" in e && "actor" in e) working(e.actor, scopeOf(e.syscall));
    if (e.type === EventType.Reply) {
      const asked = requests.get(e.inReplyTo);
      if (asked) working(asked.actor, asked.scope);
      const request = deliveries.get(e.inReplyTo);
      if (request) redeliver.add(request.seq);
    }
    if (e.type === EventType.ApprovalDecided) {
      const held = holds.get(e.approval);
      if (held) working(held.actor, held.scope);
    }
  }
  return { redeliver, agents };
}

export interface SeedResult {
  /** Entries copied into the sandbox's log. */
  copied: number;
  /** Per agent: the deliveries (sequences) it gets again. */
  redelivered: Record<string, number[]>;
}

/**
 * Appends `prefix` (the parent's entries 1..N) to the empty log of the sandbox's server at `url`
 * (reached with the sandbox kernel's credential `creds`), creates the durable consumers of every
 * agent in `agents`, and settles them: everything is acknowledged except the deliveries in
 * `redeliver`, which are handed back (nak) to be delivered again at once. Run it on the server the
 * sandbox's kernel then uses: a nak does not survive a server restart (the message would wait out
 * its ack wait instead).
 */
export async function seedLog(url: string, creds: string, prefix: readonly StoredEntry[], agents: readonly string[], redeliver: ReadonlySet<number>): Promise<SeedResult> {
  const nc = await connectNats({ servers: url, creds, name: "maxwell-fork:seed", reconnect: false });
  try {
    const jsm = await jetstreamManager(nc);
    await ensureLogStream(jsm);
    const last = (await jsm.streams.info(LOG_STREAM)).state.last_seq;
    if (last !== 0) throw new MaxwellError(ErrorCode.Conflict, `the sandbox's log is not empty (last seq ${last})`);
    const copied = await appendVerbatim(nc, prefix);
    const redelivered: Record<string, number[]> = {};
    for (const agent of agents) {
      await ensureAgentConsumers(jsm, agent);
      const again: number[] = [];
      for (const consumer of [consumers.inbox(agent), consumers.replies(agent)]) {
        again.push(...(await settleDurable(nc, consumer, (seq) => redeliver.has(seq))).redelivered);
      }
      if (again.length > 0) redelivered[agent] = again.sort((a, b) => a - b);
    }
    return { copied, redelivered };
  } finally {
    await nc.close();
  }
}

/**
 * {@link seedLog} into a new data directory on its own: creates its keys and credentials
 * (`dataDir` must not hold any) and starts its nats-server just for the copy.
 */
export async function seedSandbox(dataDir: string, prefix: readonly StoredEntry[], agents: readonly string[], redeliver: ReadonlySet<number>): Promise<SeedResult> {
  const layout = dataLayout(dataDir);
  if (existsSync(layout.keys)) throw new MaxwellError(ErrorCode.Conflict, `${dataDir} already has keys: a sandbox is made in a new directory`);
  const embedded = await startEmbedded({ dataDir });
  try {
    return await seedLog(embedded.server.url, layout.credsOf("kernel"), prefix, agents, redeliver);
  } finally {
    await embedded.server.stop();
  }
}

/** What {@link copySandboxFiles} took over, for the user. */
export interface CopiedFiles {
  copied: string[];
  left: string[];
}

/**
 * Copies what the projections and services need that is not in the log and is safe to copy:
 * the policy file, memory sealing keys, the tool workspace and demo database (as they are now,
 * not as they were at the cut), and tools.json and llm.json made harmless. Never keys,
 * credentials or the secret store.
 */
export function copySandboxFiles(parent: DataLayout, sandbox: DataLayout, opts: { allowExternal?: boolean } = {}): CopiedFiles {
  const copied: string[] = [];
  const left: string[] = ["keys and credentials (the sandbox has its own)", "the secret store (a tool call needing a secret fails)"];
  if (existsSync(parent.policies)) {
    cpSync(parent.policies, sandbox.policies);
    copied.push("policies.cedar");
  }
  const memkeys = resolve(parent.kernelDir, "memkeys");
  if (existsSync(memkeys)) {
    mkdirSync(sandbox.kernelDir, { recursive: true, mode: 0o700 });
    cpSync(memkeys, resolve(sandbox.kernelDir, "memkeys"), { recursive: true });
    copied.push(`memory sealing keys (${readdirSync(memkeys).filter((f) => f.endsWith(".key")).length} namespaces)`);
  }

  const toolsFile = resolve(parent.root, "tools.json");
  let tools: Record<string, unknown> = {};
  if (existsSync(toolsFile)) {
    try {
      tools = JSON.parse(readFileSync(toolsFile, "utf8")) as Record<string, unknown>;
    } catch (err) {
      throw new MaxwellError(ErrorCode.BadRequest, `cannot read ${toolsFile}: ${(err as Error).message}`);
    }
  }
  // The tool service's own state, as it is now: copied in, and the sandbox's config points there.
  for (const [field, folder] of [["workspace", "root"], ["db", "dir"]] as const) {
    const section = { ...((tools[field] as Record<string, unknown> | undefined) ?? {}) };
    const configured = section[folder];
    const from = resolve(parent.root, typeof configured === "string" ? configured : field);
    if (existsSync(from)) {
      cpSync(from, resolve(sandbox.root, field), { recursive: true });
      copied.push(`${field === "db" ? "demo database" : "tool workspace"} from ${from}`);
    }
    section[folder] = field;
    tools[field] = section;
  }
  if (!opts.allowExternal) {
    if (Array.isArray(tools["mcp"]) && tools["mcp"].length > 0) left.push(`${tools["mcp"].length} MCP server(s) (--allow-external keeps them)`);
    delete tools["mcp"];
    const fetch = { ...((tools["fetch"] as Record<string, unknown> | undefined) ?? {}) };
    if (Array.isArray(fetch["allow"]) && fetch["allow"].length > 0) left.push("the http-fetch allowlist (--allow-external keeps it)");
    fetch["allow"] = [];
    tools["fetch"] = fetch;
  } else if (Array.isArray(tools["mcp"])) {
    // Relative working folders meant the parent's data directory.
    tools["mcp"] = (tools["mcp"] as Array<Record<string, unknown>>).map((s) => (typeof s["cwd"] === "string" && !isAbsolute(s["cwd"]) ? { ...s, cwd: resolve(parent.root, s["cwd"]) } : s));
  }
  writeFileSync(resolve(sandbox.root, "tools.json"), JSON.stringify(tools, null, 2) + "\n");

  const llmFile = resolve(parent.root, "llm.json");
  if (existsSync(llmFile)) {
    try {
      const llm = JSON.parse(readFileSync(llmFile, "utf8")) as Record<string, unknown>;
      // The sandbox runs the offline model; no endpoint of the parent's is kept.
      delete llm["baseURL"];
      writeFileSync(resolve(sandbox.root, "llm.json"), JSON.stringify(llm, null, 2) + "\n");
      copied.push("llm.json (routes; without baseURL)");
    } catch (err) {
      throw new MaxwellError(ErrorCode.BadRequest, `cannot read ${llmFile}: ${(err as Error).message}`);
    }
  }
  return { copied, left };
}

/**
 * The sandbox's daemon config: the parent's agents and principals, every relative path made
 * absolute, agent `name` running `code` instead (in place of the module its command names, or
 * with `node` when it had none), and agents killed before the cut left out.
 */
export function sandboxConfig(config: DaemonConfig, configDir: string, name: string, code: string, opts: { groups?: string[]; killed?: ReadonlySet<string> } = {}): DaemonConfig {
  const absolute = (part: string, i: number): string => {
    if (i === 0 && (part === "node" || part === "$NODE")) return process.execPath;
    if (isAbsolute(part) || !/[/\\]/.test(part) || part.startsWith("-")) return part;
    return resolve(configDir, part);
  };
  const agents: AgentSpec[] = [];
  let found = false;
  for (const spec of config.agents ?? []) {
    if (opts.killed?.has(spec.name)) continue;
    const command = spec.command.map(absolute);
    if (spec.name === name) {
      found = true;
      const at = command.findIndex((part, i) => i > 0 && !part.startsWith("-") && /\.(m|c)?(j|t)s$/.test(part));
      if (at > 0) command[at] = code;
      else command.splice(0, command.length, ...codeCommand(code));
    }
    agents.push({ ...spec, command });
  }
  if (!found) agents.push({ name, command: codeCommand(code), ...(opts.groups && opts.groups.length > 0 ? { groups: opts.groups } : {}) });
  const out: DaemonConfig = { ...config, agents };
  return out;
}

/** How a module runs on its own: node, through tsx for TypeScript. */
function codeCommand(code: string): string[] {
  return /\.(m|c)?ts$/.test(code) ? [process.execPath, "--import", "tsx", code] : [process.execPath, code];
}
