/**
 * Agent replay speed: one synthetic trace of 1,000 syscalls (model calls, tool calls, memory
 * reads, sends, clock and random reads, a request and its reply) replayed against the handler
 * code that made it. No NATS, no kernel: this is the cost of replay itself (indexing the log,
 * numbering and comparing each syscall, serving its answer in log order). Target (issue 6):
 * replaying a 1,000-syscall trace takes at most 1 s.
 */
import { syscallId, type LogEvent, type TraceId } from "../src/protocol/mod.js";
import { defineAgent, type AgentDefinition } from "../src/sdk/mod.js";
import { replayAgent } from "../src/sdk/replay.js";

export interface ReplayResults {
  /** Syscalls in the trace (all matched). */
  syscalls: number;
  /** Log events the trace has (deliveries, effects and their outcomes, messages, replies). */
  events: number;
  /** Median time to replay the whole trace once. */
  medianMs: number;
  syscallsPerSec: number;
  runs: number;
  /** Target: the whole trace within 1 s. */
  targetMs: number;
  pass: boolean;
}

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736" as TraceId;
const AGENT = "bench-replayer";
const DECISION = { effect: "allow", policies: ["bench"], policySet: "bench" };

/** The agent: a loop over steps whose kind cycles llm, tool, mem, send; a clock read every tenth. */
function benchAgent(syscalls: number): AgentDefinition {
  return defineAgent({
    async onMessage(msg, ctx) {
      const n = syscalls - 2; // the request and the reply are two of them
      let seen = 0;
      for (let i = 0; i < n; i++) {
        const at = i % 10 === 0 ? ctx.now() : undefined;
        switch (i % 4) {
          case 0:
            seen += (await ctx.llm({ model: "maxwell-offline", max_tokens: 64, messages: [{ role: "user", content: `step ${i}` }] })).message.content.length;
            break;
          case 1:
            seen += (await ctx.tool<{ n: number }>("lookup", { q: `item ${i}`, at })).result.n;
            break;
          case 2:
            seen += (await ctx.memory<{ value: number }>(`agent:${AGENT}`, "get", { key: `k${i}` })).result.value;
            break;
          default:
            await ctx.send("sink", { i, seen });
        }
      }
      const total = await ctx.request<number>("adder", { seen, from: msg.id }, { timeoutMs: 5_000 });
      return { total, luck: ctx.random() };
    },
  });
}

/** The log the live run of {@link benchAgent} would have written. */
function benchLog(syscalls: number): LogEvent[] {
  const events: Record<string, unknown>[] = [];
  let n = 0;
  const push = (e: Record<string, unknown>): string => {
    const id = `BENCH${String(++n).padStart(10, "0")}`;
    events.push({ v: 1, prev: "", seq: n, id, at: 1_700_000_000_000 + n, trace: TRACE, principal: "alice", depth: 1, ...e });
    return id;
  };
  const delivery = push({ type: "message", kind: "request", actor: "boss", syscall: "boss-1:0", depth: 0, to: AGENT, body: { go: true }, decision: DECISION, deadline: 1_800_000_000_000 });
  const caused = (step: number, observed?: unknown) => ({ actor: AGENT, syscall: syscallId(delivery, step), causation: delivery, ...(observed ? { observed } : {}) });
  const effect = (step: number, kind: string, op: string, target: string, args: unknown, result: unknown, observed?: unknown): void => {
    const started = push({ type: "effect.started", kind, op, target, args, decision: DECISION, labels: [], ...caused(step, observed) });
    push({ type: "effect.completed", effect: started, kind, op, target, result, labels: [], ...caused(step) });
  };
  let seen = 0;
  const loop = syscalls - 2;
  for (let i = 0; i < loop; i++) {
    const at = i % 10 === 0 ? 1_700_000_000_000 + i : undefined;
    const observed = at !== undefined ? [{ kind: "now", value: at }] : undefined;
    switch (i % 4) {
      case 0:
        effect(i, "llm", "complete", "maxwell-offline", { max_tokens: 64, messages: [{ role: "user", content: `step ${i}` }], model: "maxwell-offline" }, { id: `m${i}`, model: "maxwell-offline", role: "assistant", content: [{ type: "text", text: "ok" }], stop_reason: "end_turn", usage: { input_tokens: 5, output_tokens: 1 } }, observed);
        seen += 1;
        break;
      case 1:
        // An unset field travels as nil: that is what the kernel recorded.
        effect(i, "tool", "call", "lookup", { q: `item ${i}`, at: at ?? null }, { n: 2 }, observed);
        seen += 2;
        break;
      case 2:
        effect(i, "mem", "get", `agent:${AGENT}`, { key: `k${i}` }, { value: 3 }, observed);
        seen += 3;
        break;
      default:
        push({ type: "message", kind: "send", to: "sink", body: { i, seen }, decision: DECISION, ...caused(i, observed) });
    }
  }
  const request = push({ type: "message", kind: "request", to: "adder", body: { seen, from: delivery }, decision: DECISION, ...caused(loop) });
  const sent = events[events.length - 1] as { at: number; deadline?: number };
  sent.deadline = sent.at + 5_000; // the kernel's deadline: its own time plus the timeout asked for
  push({ type: "reply", actor: "adder", syscall: "adder-1:0", causation: request, to: AGENT, inReplyTo: request, body: seen, decision: DECISION });
  push({ type: "reply", to: "boss", inReplyTo: delivery, body: { total: seen, luck: 0.5 }, decision: DECISION, ...caused(loop + 1, [{ kind: "random", value: 0.5 }]) });
  return events as unknown as LogEvent[];
}

/** Replays the synthetic 1,000-syscall trace `runs` times; reports the median. */
export async function measureReplay(say: (line: string) => void = () => undefined, opts: { syscalls?: number; runs?: number } = {}): Promise<ReplayResults> {
  const syscalls = opts.syscalls ?? 1_000;
  const runs = opts.runs ?? 7;
  const def = benchAgent(syscalls);
  const events = benchLog(syscalls);
  say(`agent replay: a ${syscalls}-syscall trace (${events.length} events), ${runs} runs`);
  const warm = await replayAgent(def, events, { name: AGENT });
  if (!warm.identical || warm.syscalls !== syscalls) {
    throw new Error(`the synthetic trace does not replay identically: ${JSON.stringify(warm.divergence ?? warm, null, 2).slice(0, 2000)}`);
  }
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const report = await replayAgent(def, events, { name: AGENT });
    times.push(performance.now() - t0);
    if (!report.identical) throw new Error("replay diverged on a rerun of the same trace");
  }
  times.sort((a, b) => a - b);
  const medianMs = times[Math.floor(times.length / 2)] ?? NaN;
  return { syscalls, events: events.length, medianMs, syscallsPerSec: (syscalls * 1000) / medianMs, runs, targetMs: 1000, pass: medianMs <= 1000 };
}
