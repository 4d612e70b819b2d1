/**
 * Agent replay on constructed logs: answers served from the log (replies, effects, memory,
 * denials, holds, clock and random), syscalls numbered and compared as the live runner numbers
 * them, and the first divergence named exactly.
 */
import { describe, expect, it } from "vitest";
import { ErrorCode, MaxwellError, syscallId, type EventId, type LogEvent, type Observation, type SyscallRequest, type TraceId, type WireError } from "../../src/protocol/mod.js";
import { defineAgent, type AgentContext, type AgentDefinition, type Message } from "../../src/sdk/mod.js";
import { formatReplayReport, lineDiff, replayAgent } from "../../src/sdk/replay.js";

const TRACE = "0af7651916cd43dd8448eb211c80319c" as TraceId;
const OTHER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736" as TraceId;
const decision = { effect: "allow", policies: ["p"], policySet: "x" };

/** Builds a log the way the kernel writes it, one event at a time. */
class LogBuilder {
  readonly events: LogEvent[] = [];
  private n = 0;

  private push(e: Record<string, unknown>): LogEvent {
    const event = { v: 1, prev: "0".repeat(64), seq: this.events.length + 1, id: `EV${String(++this.n).padStart(8, "0")}`, at: 1_000_000 + this.n, ...e } as unknown as LogEvent;
    this.events.push(event);
    return event;
  }

  private caused(actor: string, syscall: string, extra: { causation?: string; observed?: Observation[]; trace?: TraceId }) {
    const out: Record<string, unknown> = { actor, principal: "alice", syscall, trace: extra.trace ?? TRACE, depth: 1 };
    if (extra.causation !== undefined) out["causation"] = extra.causation;
    if (extra.observed && extra.observed.length > 0) out["observed"] = extra.observed;
    return out;
  }

  /** A message from `from` delivered to `to`. */
  deliver(to: string, body: unknown, kind: "send" | "request" = "send", from = "alice", trace: TraceId = TRACE): Message {
    const e = this.push({ ...this.caused(from, `x-${this.n}:0`, { trace }), depth: 0, type: "message", kind, to, body, decision, ...(kind === "request" ? { deadline: 2_000_000 } : {}) }) as Extract<LogEvent, { type: "message" }>;
    return { id: e.id, seq: e.seq, from, principal: "alice", kind, body, trace, depth: 0, redelivered: false, labels: [] };
  }

  message(actor: string, step: string, kind: "send" | "request", to: string, body: unknown, extra: { causation?: string; observed?: Observation[]; timeoutMs?: number } = {}): EventId {
    const e = this.push({ ...this.caused(actor, step, extra), type: "message", kind, to, body, decision });
    if (kind === "request") (e as { deadline?: number }).deadline = e.at + (extra.timeoutMs ?? 30_000);
    return e.id;
  }

  reply(actor: string, step: string, to: string, inReplyTo: string, answer: { body: unknown } | { error: WireError }, extra: { causation?: string; observed?: Observation[] } = {}): EventId {
    return this.push({ ...this.caused(actor, step, extra), type: "reply", to, inReplyTo, decision, ...answer }).id;
  }

  effect(actor: string, step: string, kind: "llm" | "tool" | "mem", target: string, args: unknown, outcome: { result: unknown; usage?: unknown } | { error: WireError }, extra: { causation?: string; observed?: Observation[]; op?: string } = {}): EventId {
    const op = extra.op ?? (kind === "llm" ? "complete" : "call");
    const started = this.push({ ...this.caused(actor, step, extra), type: "effect.started", kind, op, target, args, decision, labels: [] });
    return this.complete(actor, step, started.id, kind, op, target, outcome, extra.causation);
  }

  /** Starts an effect whose outcome is not in the log. */
  started(actor: string, step: string, kind: "llm" | "tool" | "mem", target: string, args: unknown, extra: { causation?: string } = {}): EventId {
    return this.push({ ...this.caused(actor, step, extra), type: "effect.started", kind, op: "call", target, args, decision, labels: [] }).id;
  }

  complete(actor: string, step: string, effect: string, kind: string, op: string, target: string, outcome: { result: unknown; usage?: unknown } | { error: WireError }, causation?: string): EventId {
    return this.push({ ...this.caused(actor, step, { ...(causation ? { causation } : {}) }), type: "effect.completed", effect, kind, op, target, labels: ["untrusted"], ...outcome }).id;
  }

  denied(actor: string, step: string, op: string, to: string, error: WireError, extra: { causation?: string; observed?: Observation[]; request?: Record<string, unknown> } = {}): EventId {
    const { request, ...caused } = extra;
    return this.push({ ...this.caused(actor, step, caused), type: "decision.denied", op, to, decision: { ...decision, effect: "deny" }, error, ...(request ? { request } : {}) }).id;
  }

  record(actor: string, step: string, observed: Observation[], extra: { causation?: string } = {}): EventId {
    return this.push({ ...this.caused(actor, step, extra), type: "record", observed }).id;
  }

  held(actor: string, step: string, op: string, request: Omit<SyscallRequest, "id">, extra: { causation?: string } = {}): EventId {
    return this.push({ ...this.caused(actor, step, extra), type: "approval.requested", op, request: { id: step, ...request }, digest: "d", reason: "destructive tool call", decision, labels: [], expiresAt: 9e12 }).id;
  }

  decided(approval: string, verdict: "approve" | "deny", by: string, reason?: string): EventId {
    return this.push({ type: "approval.decided", approval, verdict, by, ...(reason ? { reason } : {}) }).id;
  }

  /** Any event that does not concern the agent (another agent's traffic). */
  noise(): void {
    this.push({ ...this.caused("other", "o-1:0", {}), type: "message", kind: "send", to: "elsewhere", body: 1, decision });
  }
}

const answer = (text: string) => ({ id: "msg_1", model: "maxwell-offline", role: "assistant", content: [{ type: "text", text }], stop_reason: "end_turn", usage: { input_tokens: 3, output_tokens: 2 } });

/** A planner handling a request: clock, model, tool, request, memory, send, random, reply. */
function plannerLog() {
  const log = new LogBuilder();
  const msg = log.deliver("planner", { task: "sum", items: [1, 2] }, "request", "boss");
  const s = (i: number) => syscallId(msg.id, i);
  const c = { causation: msg.id };
  log.noise();
  log.effect("planner", s(0), "llm", "maxwell-offline", { max_tokens: 50, messages: [{ role: "user", content: "sum" }], model: "maxwell-offline" }, { result: answer("use the adder"), usage: { model: "maxwell-offline", inputTokens: 3, outputTokens: 2 } }, { ...c, observed: [{ kind: "now", value: 1234 }] });
  log.effect("planner", s(1), "tool", "lookup", { q: "sum" }, { result: { hits: ["adder"] } }, c);
  const req = log.message("planner", s(2), "request", "adder", { items: [1, 2] }, { ...c, timeoutMs: 5_000 });
  log.noise();
  log.reply("adder", "adder-scope:0", "planner", req, { body: { total: 3 } }, { causation: req });
  log.effect("planner", s(3), "mem", "agent:planner", { key: "last" }, { result: { value: 2 } }, { ...c, op: "get" });
  log.message("planner", s(4), "send", "audit", { total: 3, before: 2 }, c);
  log.reply("planner", s(5), "boss", msg.id, { body: { total: 3, at: 1234, luck: 0.25 } }, { ...c, observed: [{ kind: "random", value: 0.25 }] });
  return { log, msg };
}

interface Seen {
  now?: number;
  text?: string;
  hits?: unknown;
  total?: unknown;
  mem?: unknown;
  sent?: unknown;
}

function planner(seen: Seen, change: { lookup?: Record<string, unknown>; skipSend?: boolean; extraSend?: boolean; reply?: unknown } = {}): AgentDefinition {
  return defineAgent({
    async onMessage(msg, ctx) {
      const task = msg.body as { task: string; items: number[] };
      seen.now = ctx.now();
      const plan = await ctx.llm({ model: "maxwell-offline", max_tokens: 50, messages: [{ role: "user", content: task.task }] });
      seen.text = plan.message.content[0]?.text;
      seen.hits = (await ctx.tool("lookup", change.lookup ?? { q: task.task })).result;
      const sum = await ctx.request<{ total: number }>("adder", { items: task.items }, { timeoutMs: 5_000 });
      seen.total = sum.total;
      const mem = await ctx.memory<{ value: number }>("agent:planner", "get", { key: "last" });
      seen.mem = mem.result;
      if (!change.skipSend) seen.sent = await ctx.send("audit", { total: sum.total, before: mem.result.value });
      if (change.extraSend) await ctx.send("audit", "again");
      const luck = ctx.random();
      return change.reply ?? { total: sum.total, at: seen.now, luck };
    },
  });
}

describe("agent replay", () => {
  it("serves every answer from the log and reports identical when the code issues the same syscalls", async () => {
    const { log } = plannerLog();
    const seen: Seen = {};
    const report = await replayAgent(planner(seen), log.events, { name: "planner" });
    expect(report).toMatchObject({ agent: "planner", identical: true, deliveries: 1, syscalls: 6, incomplete: [] });
    expect(report.divergence).toBeUndefined();
    expect(seen).toMatchObject({ now: 1234, text: "use the adder", hits: { hits: ["adder"] }, total: 3, mem: { value: 2 } });
    expect(seen.sent).toMatchObject({ seq: expect.any(Number), event: expect.stringMatching(/^EV/) });
    expect(formatReplayReport(report)).toBe("identical: 6 syscalls matched over 1 delivery");
  });

  it("names the exact syscall when the code calls a tool with different arguments, with a diff", async () => {
    const { log, msg } = plannerLog();
    const report = await replayAgent(planner({}, { lookup: { q: "sum", limit: 5 } }), log.events, { name: "planner" });
    expect(report.identical).toBe(false);
    expect(report.syscalls).toBe(1);
    const d = report.divergence;
    expect(d).toMatchObject({ kind: "mismatch", syscall: syscallId(msg.id, 1), run: { id: msg.id, kind: "request", from: "boss" } });
    expect(d?.recorded).toMatchObject({ op: "tool", target: "lookup", body: { q: "sum" }, type: "effect.started" });
    expect(d?.issued).toMatchObject({ op: "tool", target: "lookup", body: { q: "sum", limit: 5 } });
    expect(d?.summary).toContain("args differ");
    expect(d?.diff.split("\n")).toContain('+     "limit": 5,');
    const text = formatReplayReport(report);
    expect(text).toContain(`divergence (mismatch) at syscall ${syscallId(msg.id, 1)}`);
    expect(text).toContain("the log recorded: tool lookup");
  });

  it("reports the first difference when the code leaves a syscall out", async () => {
    const { log, msg } = plannerLog();
    const report = await replayAgent(planner({}, { skipSend: true }), log.events, { name: "planner" });
    // Without the send, the random read that rode on the reply now comes before step 4 (the send's id).
    expect(report.divergence).toMatchObject({ kind: "observation", syscall: syscallId(msg.id, 4), recorded: { op: "send" }, issued: { observed: ["random"] } });
    expect(report.divergence?.diff.split("\n")).toContain('+     "random"');
  });

  it("reports what the log has beyond the code's last syscall as missing", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("notifier", "go");
    log.message("notifier", syscallId(msg.id, 0), "send", "a", 1, { causation: msg.id });
    log.message("notifier", syscallId(msg.id, 1), "send", "b", 2, { causation: msg.id });
    const def = defineAgent({ onMessage: async (_m, ctx) => void (await ctx.send("a", 1)) });
    const report = await replayAgent(def, log.events, { name: "notifier" });
    expect(report.divergence).toMatchObject({ kind: "missing", syscall: syscallId(msg.id, 1), recorded: { op: "send", target: "b", body: 2 } });
    expect(report.divergence?.issued).toBeUndefined();
    expect(report.divergence?.diff).toContain('-   "target": "b"');
  });

  it("reports a syscall the code issued beyond what the log recorded as extra", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("notifier", "go");
    log.message("notifier", syscallId(msg.id, 0), "send", "a", 1, { causation: msg.id });
    const def = defineAgent({
      async onMessage(_m, ctx) {
        await ctx.send("a", 1);
        await ctx.send("b", 2);
      },
    });
    const report = await replayAgent(def, log.events, { name: "notifier" });
    expect(report).toMatchObject({ identical: false, syscalls: 1, divergence: { kind: "extra", syscall: syscallId(msg.id, 1), issued: { op: "send", target: "b", body: 2 } } });
    expect(report.divergence?.recorded).toBeUndefined();
  });

  it("compares bodies as the wire carries them: an unset field is nil, key order does not matter", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("tidy", "go");
    log.message("tidy", syscallId(msg.id, 0), "send", "sink", { b: [1, null], a: null, when: new Date(5) }, { causation: msg.id });
    const def = defineAgent({ onMessage: async (_m, ctx) => void (await ctx.send("sink", { a: undefined, when: new Date(5), b: [1, undefined] })) });
    expect(await replayAgent(def, log.events, { name: "tidy" })).toMatchObject({ identical: true, syscalls: 1 });
    const other = defineAgent({ onMessage: async (_m, ctx) => void (await ctx.send("sink", { b: [1, null], a: 0, when: new Date(5) })) });
    expect((await replayAgent(other, log.events, { name: "tidy" })).divergence).toMatchObject({ kind: "mismatch", summary: expect.stringContaining("body differ") });
  });

  it("compares the handler's returned value with the recorded reply", async () => {
    const { log, msg } = plannerLog();
    const report = await replayAgent(planner({}, { reply: { total: 4 } }), log.events, { name: "planner" });
    expect(report.divergence).toMatchObject({ kind: "mismatch", syscall: syscallId(msg.id, 5), recorded: { op: "reply", target: "boss" }, issued: { op: "reply", body: { total: 4 } } });
    expect(report.divergence?.summary).toContain("body");
  });

  it("compares an error reply (a handler that throws on a request) with the recorded error", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("strict", { n: -1 }, "request", "boss");
    log.reply("strict", syscallId(msg.id, 0), "boss", msg.id, { error: { code: ErrorCode.BadRequest, message: "n must be positive" } }, { causation: msg.id });
    const throwing = (message: string) =>
      defineAgent({
        onMessage() {
          throw new MaxwellError(ErrorCode.BadRequest, message);
        },
      });
    expect((await replayAgent(throwing("n must be positive"), log.events, { name: "strict" })).identical).toBe(true);
    const changed = await replayAgent(throwing("n must be > 0"), log.events, { name: "strict" });
    expect(changed.divergence).toMatchObject({ kind: "mismatch", syscall: syscallId(msg.id, 0), summary: expect.stringContaining("error differ") });
  });

  it("throws a recorded denial as a MaxwellError with the recorded code and message", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("rogue", "try");
    const error = { code: ErrorCode.Forbidden, message: "denied: no policy permits rogue to tool.call db-drop (default deny)", policies: [] };
    log.denied("rogue", syscallId(msg.id, 0), "tool", "db-drop", error, { causation: msg.id });
    log.message("rogue", syscallId(msg.id, 1), "send", "boss", { refused: "forbidden" }, { causation: msg.id });
    let caught: unknown;
    const def = defineAgent({
      async onMessage(_m, ctx) {
        try {
          await ctx.tool("db-drop", { table: "users" });
        } catch (err) {
          caught = err;
          await ctx.send("boss", { refused: (err as MaxwellError).code });
        }
      },
    });
    const report = await replayAgent(def, log.events, { name: "rogue" });
    expect(report).toMatchObject({ identical: true, syscalls: 2 });
    expect(caught).toBeInstanceOf(MaxwellError);
    expect(caught).toMatchObject({ code: ErrorCode.Forbidden, message: error.message });
    // The log keeps no body for a denied syscall: the op and target are what is compared.
    const other = defineAgent({ onMessage: (_m, ctx) => ctx.tool("file-write", {}).catch(() => undefined) });
    expect((await replayAgent(other, log.events, { name: "rogue" })).divergence).toMatchObject({ kind: "mismatch", summary: expect.stringContaining("target differ") });
  });

  it("compares the whole refused request where the log records it: other arguments to the same tool diverge", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("rogue", "try");
    const id = syscallId(msg.id, 0);
    const error = { code: ErrorCode.Forbidden, message: "denied: no policy permits rogue to tool.call db-drop (default deny)" };
    log.denied("rogue", id, "tool", "db-drop", error, { causation: msg.id, request: { id, to: "db-drop", body: { table: "users" }, causation: msg.id } });
    const dropping = (table: string) => defineAgent({ onMessage: (_m, ctx) => ctx.tool("db-drop", { table }).catch(() => undefined) });
    expect((await replayAgent(dropping("users"), log.events, { name: "rogue" })).identical).toBe(true);
    const other = await replayAgent(dropping("orders"), log.events, { name: "rogue" });
    expect(other.divergence).toMatchObject({ kind: "mismatch", syscall: id, summary: expect.stringContaining("args differ") });
  });

  it("serves a held call with what followed the human's decision", async () => {
    const log = new LogBuilder();
    const approved = log.deliver("ops", { table: "orders" });
    const a = syscallId(approved.id, 0);
    const hold = log.held("ops", a, "tool", { to: "db-drop", body: { table: "orders" }, causation: approved.id }, { causation: approved.id });
    log.decided(hold, "approve", "carol");
    log.effect("ops", a, "tool", "db-drop", { table: "orders" }, { result: { dropped: "orders" } }, { causation: approved.id });
    const refused = log.deliver("ops", { table: "users" });
    const b = syscallId(refused.id, 0);
    const hold2 = log.held("ops", b, "tool", { to: "db-drop", body: { table: "users" }, causation: refused.id }, { causation: refused.id });
    log.decided(hold2, "deny", "carol", "not today");
    const outcomes: unknown[] = [];
    const def = defineAgent({
      async onMessage(msg, ctx) {
        const table = (msg.body as { table: string }).table;
        outcomes.push(
          await ctx.tool("db-drop", { table }).then(
            (r) => r.result,
            (err: MaxwellError) => ({ code: err.code, message: err.message }),
          ),
        );
      },
    });
    const report = await replayAgent(def, log.events, { name: "ops" });
    expect(report).toMatchObject({ identical: true, deliveries: 2, syscalls: 2 });
    expect(outcomes).toEqual([{ dropped: "orders" }, { code: ErrorCode.Forbidden, message: `held action ${hold2} was refused by carol: not today` }]);
    // The held request is recorded exactly: different arguments diverge even though the call was refused.
    const other = defineAgent({ onMessage: (_m, ctx) => ctx.tool("db-drop", { table: "all" }).catch(() => undefined) });
    expect((await replayAgent(other, log.events, { name: "ops" })).divergence).toMatchObject({ kind: "mismatch", syscall: a, recorded: { type: "approval.requested", body: { table: "orders" } } });
  });

  it("detects an agent that puts Date.now() in a body only through the divergence of what it issues", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("clocky", "tick");
    // Live, the agent sent the wall clock it read directly; replay does not intercept Date.now().
    log.message("clocky", syscallId(msg.id, 0), "send", "sink", { at: 1_700_000_000_000 }, { causation: msg.id });
    const def = defineAgent({ onMessage: async (_m, ctx) => void (await ctx.send("sink", { at: Date.now() })) });
    const report = await replayAgent(def, log.events, { name: "clocky" });
    expect(report.divergence).toMatchObject({ kind: "mismatch", syscall: syscallId(msg.id, 0), recorded: { body: { at: 1_700_000_000_000 } } });
    expect(report.divergence?.diff).toMatch(/^- {5}"at": 1700000000000$/m);
    expect(report.divergence?.diff).toMatch(/^\+ {5}"at": \d+$/m);
  });

  it("serves recorded ctx.now()/ctx.random() values in order, records leftovers at flush, and flags a read the log lacks", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("dice", "roll");
    log.message("dice", syscallId(msg.id, 0), "send", "table", { roll: 0.5 }, { causation: msg.id, observed: [{ kind: "now", value: 10 }, { kind: "random", value: 0.5 }] });
    log.record("dice", syscallId(msg.id, 1), [{ kind: "now", value: 20 }], { causation: msg.id });
    const reads: number[] = [];
    const dice = (extra: boolean) =>
      defineAgent({
        async onMessage(_m, ctx) {
          reads.push(ctx.now());
          const roll = ctx.random();
          reads.push(roll);
          await ctx.send("table", { roll });
          reads.push(ctx.now());
          if (extra) reads.push(ctx.random());
        },
      });
    const report = await replayAgent(dice(false), log.events, { name: "dice" });
    expect(report).toMatchObject({ identical: true, syscalls: 2 });
    expect(reads).toEqual([10, 0.5, 20]);
    const extra = await replayAgent(dice(true), log.events, { name: "dice" });
    expect(extra.divergence).toMatchObject({ kind: "observation", syscall: syscallId(msg.id, 1) });
    expect(extra.divergence?.summary).toContain("ctx.random()");
    // A record the code no longer makes (no leftover read) is missing.
    const quiet = defineAgent({
      async onMessage(_m, ctx) {
        ctx.now();
        await ctx.send("table", { roll: ctx.random() });
      },
    });
    expect((await replayAgent(quiet, log.events, { name: "dice" })).divergence).toMatchObject({ kind: "missing", recorded: { op: "record" } });
  });

  it("hands answers back in the order the log recorded them, as they arrived live", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("fan", "go");
    const c = { causation: msg.id };
    const toA = log.message("fan", syscallId(msg.id, 0), "request", "a", "q", c);
    const toB = log.message("fan", syscallId(msg.id, 1), "request", "b", "q", c);
    // b answered first, so the handler's follow-up for b took step 2.
    log.reply("b", "b-1:0", "fan", toB, { body: "from b" });
    log.message("fan", syscallId(msg.id, 2), "send", "sink", "from b", c);
    log.reply("a", "a-1:0", "fan", toA, { body: "from a" });
    log.message("fan", syscallId(msg.id, 3), "send", "sink", "from a", c);
    const def = defineAgent({
      async onMessage(_m, ctx) {
        await Promise.all(["a", "b"].map((to) => ctx.request<string>(to, "q").then((r) => ctx.send("sink", r))));
      },
    });
    expect(await replayAgent(def, log.events, { name: "fan" })).toMatchObject({ identical: true, syscalls: 4 });
  });

  it("stops without a divergence where the log ends, and says where", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("slow", "go");
    log.started("slow", syscallId(msg.id, 0), "tool", "lookup", { q: 1 }, { causation: msg.id });
    let after = false;
    const def = defineAgent({
      async onMessage(_m, ctx) {
        await ctx.tool("lookup", { q: 1 }).catch(() => undefined);
        after = true;
        await ctx.send("x", 1);
      },
    });
    const report = await replayAgent(def, log.events, { name: "slow" });
    expect(report).toMatchObject({ identical: true, syscalls: 1, incomplete: [{ run: { id: msg.id }, syscall: syscallId(msg.id, 0), reason: expect.stringContaining("no outcome") }] });
    expect(after).toBe(true);
    expect(formatReplayReport(report)).toContain("note: the log ends inside");
  });

  it("leaves a request the agent had not handled where the log ends as incomplete, not a divergence", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("late", "q", "request", "boss");
    const def = defineAgent({ onMessage: (_m, ctx) => ctx.send("x", 1) });
    expect(await replayAgent(def, log.events, { name: "late" })).toMatchObject({ identical: true, deliveries: 1, syscalls: 0, incomplete: [{ run: { id: msg.id }, reason: expect.stringContaining("had not handled") }] });
  });

  it("takes the retried outcome over a refusal for now (the agent was paused)", async () => {
    const log = new LogBuilder();
    const msg = log.deliver("pausy", "go");
    const id = syscallId(msg.id, 0);
    log.denied("pausy", id, "send", "x", { code: ErrorCode.Unavailable, message: "agent 'pausy' is paused" }, { causation: msg.id, observed: [{ kind: "now", value: 1 }] });
    log.message("pausy", id, "send", "x", { at: 2 }, { causation: msg.id, observed: [{ kind: "now", value: 2 }] });
    const def = defineAgent({ onMessage: async (_m, ctx) => void (await ctx.send("x", { at: ctx.now() })) });
    expect(await replayAgent(def, log.events, { name: "pausy" })).toMatchObject({ identical: true, syscalls: 1 });
  });

  it("replays only the deliveries of a trace, or of a sequence range", async () => {
    const log = new LogBuilder();
    const first = log.deliver("echo", 1, "send", "alice", TRACE);
    log.message("echo", syscallId(first.id, 0), "send", "sink", 1, { causation: first.id });
    const second = log.deliver("echo", 2, "send", "alice", OTHER_TRACE);
    log.message("echo", syscallId(second.id, 0), "send", "sink", "changed", { causation: second.id });
    const echo = defineAgent({ onMessage: async (m, ctx) => void (await ctx.send("sink", m.body)) });
    expect(await replayAgent(echo, log.events, { name: "echo" })).toMatchObject({ identical: false, deliveries: 2, divergence: { run: { id: second.id } } });
    expect(await replayAgent(echo, log.events, { name: "echo", trace: TRACE.slice(0, 8) })).toMatchObject({ identical: true, deliveries: 1 });
    expect(await replayAgent(echo, log.events, { name: "echo", to: first.seq })).toMatchObject({ identical: true, deliveries: 1 });
    expect(await replayAgent(echo, log.events, { name: "echo", from: second.seq })).toMatchObject({ identical: false, deliveries: 1 });
  });

  it("replays onStart runs the log shows, and reports them missing when the code has no onStart", async () => {
    const log = new LogBuilder();
    log.denied("rogue", "01START:0", "send", "worker-1", { code: ErrorCode.Forbidden, message: "denied" });
    log.denied("rogue", "01START:1", "request", "coordinator", { code: ErrorCode.Forbidden, message: "denied" });
    const codes: string[] = [];
    const withStart = defineAgent({
      async onStart(ctx: AgentContext) {
        for (const attempt of [() => ctx.send("worker-1", 1), () => ctx.request("coordinator", 2, { timeoutMs: 2000 })]) {
          await attempt().catch((err: MaxwellError) => codes.push(err.code));
        }
      },
      onMessage() {},
    });
    expect(await replayAgent(withStart, log.events, { name: "rogue" })).toMatchObject({ identical: true, starts: 1, deliveries: 0, syscalls: 2 });
    expect(codes).toEqual([ErrorCode.Forbidden, ErrorCode.Forbidden]);
    // Read from the middle of the run (the log from its second syscall on): it is left out, not half replayed.
    expect(await replayAgent(withStart, log.events.slice(1), { name: "rogue" })).toMatchObject({ identical: true, starts: 0, syscalls: 0 });
    const without = defineAgent({ onMessage() {} });
    expect((await replayAgent(without, log.events, { name: "rogue" })).divergence).toMatchObject({ kind: "missing", syscall: "01START:0", run: { kind: "start" } });
  });
});

describe("line diff", () => {
  it("marks removed and added lines and keeps context around them", () => {
    const before = ["{", '  "a": 1,', '  "b": 2,', '  "c": 3,', '  "d": 4,', '  "e": 5,', '  "f": 6', "}"].join("\n");
    const after = before.replace('"b": 2', '"b": 20');
    expect(lineDiff(before, after, 1).split("\n")).toEqual(["  …", '    "a": 1,', '-   "b": 2,', '+   "b": 20,', '    "c": 3,', "  …"]);
    expect(lineDiff("x", "x")).toBe("  x");
    expect(lineDiff("", "a\nb")).toBe("+ a\n+ b");
  });
});

describe("agent replay of memory writes", () => {
  function writerLog(key: string) {
    const log = new LogBuilder();
    const msg = log.deliver("writer", { note: "remember this" });
    // The kernel logs a put with its value sealed (it may have been erased since).
    log.effect("writer", syscallId(msg.id, 0), "mem", "agent:writer", { key, sealed: { sealed: "AAAA", key: "0".repeat(32), record: key } }, { result: { key, version: 1 } }, { causation: msg.id, op: "put" });
    return log;
  }
  const writer = defineAgent({
    async onMessage(msg, ctx) {
      await ctx.memory("agent:writer", "put", { key: "note", value: (msg.body as { note: string }).note });
    },
  });

  it("matches a put whose value the log holds sealed: everything but the value is compared", async () => {
    const report = await replayAgent(writer, writerLog("note").events, { name: "writer" });
    expect(report.identical).toBe(true);
  });

  it("still names a put to another key", async () => {
    const report = await replayAgent(writer, writerLog("other").events, { name: "writer" });
    expect(report.identical).toBe(false);
    expect(report.divergence?.recorded).toMatchObject({ op: "mem", target: "agent:writer" });
  });
});
