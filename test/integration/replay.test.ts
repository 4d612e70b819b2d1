/**
 * Agent replay against a real recorded run: a real kernel, the offline model behind the real
 * gateway, scripted tools, a held call a human approves, and agents run live with the SDK from
 * module files. Each agent's code is then replayed against the log, in process and through the
 * built CLI (whose exit codes gate CI): the same code is identical; a changed tool call, and an
 * agent that reads the wall clock directly, diverge at the exact syscall.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, SyscallOp, decodeMap, newScope, subjects, syscallId, type LogEvent } from "../../src/protocol/mod.js";
import { LogIndex, indexedAgentEntries, indexedReplayEntries, type LogReader } from "../../src/runtime/log-index.js";
import { createLogger } from "../../src/runtime/logger.js";
import { packageRoot } from "../../src/runtime/paths.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import type { AgentDefinition } from "../../src/sdk/mod.js";
import { replayAgent, type ReplayReport } from "../../src/sdk/replay.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { eventually, logEvents, startHarness, type Harness } from "../support/harness.js";
import { runCli, type CliResult } from "../support/cli.js";
import { scriptedManifest, startScriptedTools, type ScriptedTools } from "../support/scripted-tools.js";

const SDK = JSON.stringify(join(packageRoot, "dist", "src", "sdk", "mod.js"));

/** Agent modules as an author writes them: `export default` the definition, then `await main(...)`. */
const planner = (lookupArgs: string) => `
import { defineAgent, main } from ${SDK};

const planner = defineAgent({
  async onMessage(msg, ctx) {
    const task = msg.body;
    const started = ctx.now();
    const plan = await ctx.llm({ model: "maxwell-offline", max_tokens: 64, messages: [{ role: "user", content: "Plan: " + task.task }] });
    const found = await ctx.tool("lookup", ${lookupArgs});
    const answer = await ctx.request("helper", { items: task.items, hint: found.result.hits[0] }, { timeoutMs: 10000 });
    let wrote;
    try {
      wrote = (await ctx.tool("file-write", { path: "out.txt", text: answer.upper.join(",") })).result;
    } catch (err) {
      wrote = { refused: err.code };
    }
    ctx.log.info({ took: ctx.now() - started, wrote, stop: plan.message.stop_reason }, "planned");
  },
});

export default planner;
await main(planner);
`;

const AGENTS: Record<string, string> = {
  "planner.js": planner("{ q: task.task }"),
  "planner-changed.js": planner("{ q: task.task, limit: 3 }"),
  "helper.js": `
import { defineAgent, main } from ${SDK};

const helper = defineAgent({
  async onMessage(msg, ctx) {
    const items = msg.body.items;
    const luck = ctx.random();
    const looked = await ctx.tool("lookup", { q: items.join(" ") });
    return { upper: items.map((s) => s.toUpperCase()), first: looked.result.hits[0], luck };
  },
});

export default helper;
await main(helper);
`,
  "janitor.js": `
import { defineAgent, main } from ${SDK};

const janitor = defineAgent({
  async onMessage(msg, ctx) {
    const dropped = await ctx.tool("db-drop", { table: msg.body.table });
    ctx.log.info({ dropped: dropped.result }, "dropped after a human approved");
  },
});

export default janitor;
await main(janitor);
`,
  // Reads the wall clock directly instead of ctx.now(): replay cannot serve it.
  "clocky.js": `
import { defineAgent, main } from ${SDK};

const clocky = defineAgent({
  async onMessage(msg, ctx) {
    await ctx.tool("lookup", { q: "what time is it", at: Date.now() });
  },
});

export default clocky;
await main(clocky);
`,
};

describe("agent replay of a recorded multi-agent run", () => {
  let h: Harness;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let tools: ScriptedTools;
  let alice: SyscallClient;
  let carol: SyscallClient;
  let dir = "";
  const connections: NatsConnection[] = [];
  let log: LogEvent[] = [];

  const events = (): Promise<LogEvent[]> => logEvents(h);

  /** Imports an agent module the way replay does (its `main` returns at once) and takes the definition. */
  async function load(file: string): Promise<AgentDefinition> {
    process.env["MAXWELL_REPLAY"] = "1";
    try {
      const mod = (await import(pathToFileURL(join(dir, file)).href)) as { default: AgentDefinition };
      return mod.default;
    } finally {
      delete process.env["MAXWELL_REPLAY"];
    }
  }

  async function principal(name: string, groups: string[] = []): Promise<SyscallClient> {
    const r = await h.register(name, "principal", groups);
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(r.creds), name, inboxPrefix: subjects.inboxPrefix(name) });
    connections.push(nc);
    return new SyscallClient(nc, name, { retryForMs: 20_000 });
  }

  async function live(name: string, file: string, groups: string[]): Promise<void> {
    const r = await h.register(name, "agent", groups);
    await h.agent(await load(file), r.creds, name);
  }

  function send(to: string, body: unknown) {
    return alice.call(SyscallOp.Send, { id: syscallId(`t-${newScope()}`, 0), to, body });
  }

  async function replay(name: string, file: string, opts: { trace?: string } = {}): Promise<ReplayReport> {
    return replayAgent(await load(file), log, { name, ...opts });
  }

  const maxwell = (...args: string[]): Promise<CliResult> => runCli(["--data", h.dir, "--nats", h.url, ...args]);

  const count = (type: string, actor: string) => log.filter((e) => e.type === type && "actor" in e && e.actor === actor).length;

  beforeAll(async () => {
    h = await startHarness();
    dir = join(h.dir, "agents");
    mkdirSync(dir);
    for (const [file, source] of Object.entries(AGENTS)) writeFileSync(join(dir, file), source);
    model = await startOfflineModel({ apiKey: "offline-test-key" });
    gateway = new LlmGateway({ servers: h.url, creds: h.layout.credsOf("svc-llm"), apiKey: "offline-test-key", baseURL: model.url, log: createLogger("llm", "silent") });
    await gateway.start();
    tools = await startScriptedTools(h, {
      lookup: (args) => ({ hits: [`hit for ${(args as { q: string }).q}`, "second"] }),
      "file-write": () => ({ wrote: true }),
      "db-drop": (args) => ({ dropped: (args as { table: string }).table }),
    });
    for (const [name, effect] of [["lookup", "read"], ["file-write", "write"], ["db-drop", "destructive"]] as const) {
      await h.admin.toolRegister({ manifest: scriptedManifest(name, effect) });
    }
    alice = await principal("alice");
    carol = await principal("carol", ["approvers"]);
    await live("planner", "planner.js", ["coordinators"]);
    await live("helper", "helper.js", ["workers"]);
    await live("janitor", "janitor.js", ["tool-users"]);
    await live("clocky", "clocky.js", []);

    await send("planner", { task: "shout these", items: ["a", "b"] });
    await send("planner", { task: "shout those", items: ["c"] });
    await send("clocky", { tick: 1 });
    await send("janitor", { table: "orders" });
    // The drop is held for a human: carol approves exactly that request.
    let held: Extract<LogEvent, { type: "approval.requested" }> | undefined;
    await eventually(async () => {
      held = (await events()).find((e): e is Extract<LogEvent, { type: "approval.requested" }> => e.type === EventType.ApprovalRequested && e.actor === "janitor");
      return held !== undefined;
    }, "the drop to be held");
    if (!held) throw new Error("no hold");
    await carol.call(SyscallOp.Approve, { id: syscallId(`t-${newScope()}`, 0), body: { approval: held.id, digest: held.digest, verdict: "approve" } });
    // Done when the planner recorded its last clock read twice, and the others finished their calls.
    await eventually(async () => {
      log = await events();
      return count(EventType.Record, "planner") === 2 && count(EventType.Reply, "helper") === 2 && count(EventType.EffectCompleted, "clocky") === 1 && count(EventType.EffectCompleted, "janitor") === 1;
    }, "the recorded run to finish", 30_000);
  });
  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await tools?.close();
    await gateway?.stop(0);
    await model?.close();
    await h?.close();
  });

  it("recorded a run that used the model, tools, a request, a denial and a held call", () => {
    expect(count(EventType.EffectStarted, "planner")).toBe(4); // llm and lookup, twice
    expect(log.filter((e) => e.type === EventType.Denied && e.actor === "planner" && e.to === "file-write")).toHaveLength(2);
    expect(log.filter((e) => e.type === EventType.Message && e.actor === "planner" && e.kind === "request")).toHaveLength(2);
    expect(log.find((e) => e.type === EventType.EffectStarted && e.actor === "janitor")).toMatchObject({ target: "db-drop", approval: expect.any(String) });
    expect(model.requests.length).toBeGreaterThanOrEqual(2);
  });

  it("replays each agent with the code that ran: identical, every syscall matched", async () => {
    // planner per delivery: llm, lookup, request, file-write (denied), record of the last clock read.
    expect(await replay("planner", "planner.js")).toMatchObject({ identical: true, deliveries: 2, syscalls: 10, incomplete: [] });
    // helper per request: lookup (carrying the random read), reply.
    expect(await replay("helper", "helper.js")).toMatchObject({ identical: true, deliveries: 2, syscalls: 4, incomplete: [] });
    // janitor: the held drop, served with what followed carol's approval.
    expect(await replay("janitor", "janitor.js")).toMatchObject({ identical: true, deliveries: 1, syscalls: 1, incomplete: [] });
  });

  it("names the exact syscall when one agent's code calls a tool with different arguments", async () => {
    const report = await replay("planner", "planner-changed.js");
    const lookup = log.find((e): e is Extract<LogEvent, { type: "effect.started" }> => e.type === EventType.EffectStarted && e.actor === "planner" && e.target === "lookup");
    expect(lookup).toBeDefined();
    expect(report).toMatchObject({ identical: false, syscalls: 1 });
    expect(report.divergence).toMatchObject({
      kind: "mismatch",
      syscall: lookup?.syscall,
      run: { id: lookup?.causation, kind: "send", from: "alice" },
      recorded: { op: "tool", target: "lookup", body: { q: "shout these" }, event: lookup?.id },
      issued: { op: "tool", target: "lookup", body: { q: "shout these", limit: 3 } },
    });
    expect(report.divergence?.diff).toContain('+     "limit": 3,');
  });

  it("detects an agent that reads Date.now() directly: the call carrying it diverges", async () => {
    const report = await replay("clocky", "clocky.js");
    const call = log.find((e) => e.type === EventType.EffectStarted && e.actor === "clocky");
    expect(report.divergence).toMatchObject({ kind: "mismatch", syscall: call && "syscall" in call ? call.syscall : "?", recorded: { op: "tool", target: "lookup" } });
    expect(report.divergence?.diff).toMatch(/^- {5}"at": \d+,$/m);
    expect(report.divergence?.diff).toMatch(/^\+ {5}"at": \d+,$/m);
  });

  it("gates CI through the built CLI: exit 0 when identical, 4 at a divergence, 2 for bad usage", async () => {
    const same = await maxwell("replay", "agent", "planner", "--code", join(dir, "planner.js"));
    expect(same.stderr).toBe("");
    expect(same).toMatchObject({ code: 0, stdout: "identical: 10 syscalls matched over 2 deliveries\n" });

    const changed = await maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"));
    const lookup = log.find((e) => e.type === EventType.EffectStarted && e.actor === "planner" && e.target === "lookup");
    expect(changed.code).toBe(4);
    expect(changed.stdout).toContain(`divergence (mismatch) at syscall ${lookup && "syscall" in lookup ? lookup.syscall : "?"}`);
    expect(changed.stdout).toContain("tool lookup: args differ");
    expect(changed.stdout).toContain('+     "limit": 3,');

    const json = await maxwell("replay", "agent", "clocky", "--code", join(dir, "clocky.js"), "--json");
    expect(json.code).toBe(4);
    expect(JSON.parse(json.stdout)).toMatchObject({ agent: "clocky", identical: false, divergence: { kind: "mismatch" } });

    const usage = await maxwell("replay", "agent", "planner", "--trace", "abc", "--from", "3", "--code", join(dir, "planner.js"));
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--trace or by --from/--to");
    expect((await maxwell("replay", "agent", "nobody", "--code", join(dir, "planner.js"))).code).toBe(1);
    expect((await maxwell("replay", "agent", "--help")).stdout).toContain("4  divergence");
  });

  it("replays a trace through the log index exactly as from the whole log", async () => {
    const index = LogIndex.open(join(h.dir, "index-replay"));
    const reader: LogReader = { entries: ({ from }) => h.admin.entries(from), entriesAt: (seqs) => h.admin.readAt(seqs) };
    // (clocky is left out: its replays differ from each other, it reads the wall clock.)
    try {
      await index.catchUp(reader);
      const cases: Array<[string, string]> = [
        ["planner", "planner.js"],
        ["planner", "planner-changed.js"],
        ["helper", "helper.js"],
        ["janitor", "janitor.js"],
      ];
      let compared = 0;
      for (const [name, file] of cases) {
        const traces = [...new Set(log.filter((e) => e.type === EventType.Message && e.to === name).map((e) => ("trace" in e ? e.trace : "")))];
        expect(traces.length).toBeGreaterThan(0);
        for (const trace of [...traces, "0123456789abcdef"]) {
          const entries = await indexedReplayEntries(index, reader, name, trace.slice(0, 12));
          const events = entries.map((e) => decodeMap(e.data) as unknown as LogEvent);
          expect(events.length).toBeLessThan(log.length);
          const def = await load(file);
          expect(await replayAgent(def, events, { name, trace: trace.slice(0, 12) })).toEqual(await replayAgent(def, log, { name, trace: trace.slice(0, 12) }));
          compared += 1;
        }
      }
      expect(compared).toBeGreaterThanOrEqual(cases.length * 2);
      // Through the built CLI: the index (in the data dir) and --scan print the same report.
      const first = log.find((e) => e.type === EventType.Message && e.to === "planner");
      const trace = first && "trace" in first ? first.trace : "";
      const janitor = log.find((e) => e.type === EventType.Message && e.to === "janitor");
      const janitorTrace = janitor && "trace" in janitor ? janitor.trace : "";
      const runs = await Promise.all([
        maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"), "--trace", trace.slice(0, 8), "--json"),
        maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"), "--trace", trace.slice(0, 8), "--json", "--scan"),
        maxwell("replay", "agent", "janitor", "--code", join(dir, "janitor.js"), "--trace", janitorTrace),
        maxwell("replay", "agent", "janitor", "--code", join(dir, "janitor.js"), "--trace", janitorTrace, "--scan"),
      ]);
      expect(runs[0].code).toBe(4);
      expect(runs[0]).toEqual(runs[1]);
      expect(runs[2]).toMatchObject({ code: 0, stdout: "identical: 1 syscall matched over 1 delivery\n" });
      expect(runs[2]).toEqual(runs[3]);
      const nobody = await Promise.all([maxwell("replay", "agent", "nobody", "--code", join(dir, "planner.js"), "--trace", "abc"), maxwell("replay", "agent", "nobody", "--code", join(dir, "planner.js"), "--trace", "abc", "--scan")]);
      expect(nobody[0].code).toBe(1);
      expect(nobody[0]).toEqual(nobody[1]);
    } finally {
      await index.close();
    }
  });

  it("replays an agent's whole history (or from a seq on) through the log index exactly as from the whole log", async () => {
    const index = LogIndex.open(join(h.dir, "index-agent-replay"));
    const reader: LogReader = { entries: ({ from }) => h.admin.entries(from), entriesAt: (seqs) => h.admin.readAt(seqs) };
    try {
      await index.catchUp(reader);
      const middle = log[Math.floor(log.length / 2)]?.seq as number;
      for (const [name, file] of [
        ["planner", "planner.js"],
        ["planner", "planner-changed.js"],
        ["helper", "helper.js"],
        ["janitor", "janitor.js"],
      ] as const) {
        const def = await load(file);
        for (const from of [1, middle]) {
          const events = (await indexedAgentEntries(index, reader, name, from)).map((e) => decodeMap(e.data) as unknown as LogEvent);
          expect(events.length).toBeLessThan(log.length);
          const whole = log.filter((e) => e.seq >= from);
          expect(await replayAgent(def, events, { name, from })).toEqual(await replayAgent(def, whole, { name, from }));
        }
      }
      const runs = await Promise.all([
        maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"), "--json"),
        maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"), "--json", "--scan"),
        maxwell("replay", "agent", "helper", "--code", join(dir, "helper.js"), "--from", String(middle)),
        maxwell("replay", "agent", "helper", "--code", join(dir, "helper.js"), "--from", String(middle), "--scan"),
      ]);
      expect(runs[0].code).toBe(4);
      expect(runs[0]).toEqual(runs[1]);
      expect(runs[2].code).toBe(0);
      expect(runs[2]).toEqual(runs[3]);
    } finally {
      await index.close();
    }
  });

  it("takes the agent's command from <data>/maxwell.json, and replays one trace", async () => {
    writeFileSync(join(h.dir, "maxwell.json"), JSON.stringify({ agents: [{ name: "helper", command: ["node", "agents/helper.js"], groups: ["workers"] }] }));
    const helper = await maxwell("replay", "agent", "helper");
    expect(helper).toMatchObject({ code: 0, stdout: "identical: 4 syscalls matched over 2 deliveries\n" });

    const first = log.find((e) => e.type === EventType.Message && e.to === "planner");
    const trace = first && "trace" in first ? first.trace : "";
    const one = await maxwell("replay", "agent", "planner", "--code", join(dir, "planner-changed.js"), "--trace", trace, "--json");
    expect(one.code).toBe(4);
    expect(JSON.parse(one.stdout)).toMatchObject({ deliveries: 1, divergence: { run: { trace } } });
    // The second task's trace alone diverges too, and the first one's delivery is not replayed.
    const second = log.filter((e) => e.type === EventType.Message && e.to === "planner")[1];
    const other = await maxwell("replay", "agent", "planner", "--code", join(dir, "planner.js"), "--from", String(second?.seq ?? 1));
    expect(other).toMatchObject({ code: 0, stdout: "identical: 5 syscalls matched over 1 delivery\n" });
  });
});
