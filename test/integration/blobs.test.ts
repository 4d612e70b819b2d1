/**
 * Large payloads by content hash: a conversation's long messages and system prompt, and a large
 * tool result, are logged once as blob entries that effect events name, while the model, the tool
 * and the agent see the values themselves. A repeated syscall is answered with the value read back
 * from its blob, replay puts every value back in place, and the log still verifies.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BLOB_MIN_BYTES,
  EventType,
  SyscallOp,
  encode,
  newScope,
  parseLogEvent,
  resolveBlobs,
  subjects,
  syscallId,
  type BlobEvent,
  type EffectCompletedEvent,
  type EffectStartedEvent,
  type LogEvent,
} from "../../src/protocol/mod.js";
import { createLogger } from "../../src/runtime/logger.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { replayAgent } from "../../src/sdk/replay.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { runCli } from "../support/cli.js";
import { logEvents, recordingAgent, startHarness, until, type Harness } from "../support/harness.js";
import { scriptedManifest, startScriptedTools, type ScriptedTools } from "../support/scripted-tools.js";

const SYSTEM = `You are a careful operations assistant. ${"Follow the runbook exactly. ".repeat(150)}`;
const turn = (n: number): string => `Turn ${n}: here is the incident timeline. ${`event ${n} happened; `.repeat(200)}`;
const REPORT = `quarterly report\n${"line of figures 1234567890\n".repeat(500)}`;

describe("large payloads by content hash", () => {
  let h: Harness;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let tools: ScriptedTools;
  let alice: SyscallClient;
  const connections: NatsConnection[] = [];
  const outcomes = new Map<string, unknown>();

  const chatty = recordingAgent(outcomes, async (b, ctx) => {
    if (b.tag === "chat") {
      const messages: { role: "user" | "assistant"; content: string }[] = [];
      const answers: string[] = [];
      for (let n = 1; n <= 3; n++) {
        messages.push({ role: "user", content: turn(n) });
        const r = await ctx.llm({ model: "maxwell-offline", max_tokens: 64, system: SYSTEM, messages: [...messages] });
        const text = r.message.content.map((c) => c.text ?? "").join("");
        answers.push(text);
        messages.push({ role: "assistant", content: text });
      }
      return answers;
    }
    const first = await ctx.tool<{ text: string }>("big-report", { quarter: "q3" });
    const second = await ctx.tool<{ text: string }>("big-report", { quarter: "q3" });
    return [first.result.text.length, second.result.text === first.result.text];
  });

  async function work(tag: string): Promise<unknown> {
    await alice.call(SyscallOp.Send, { id: syscallId(`b-${newScope()}`, 0), to: "chatty", body: { tag } });
    await until(() => outcomes.has(tag), tag, 30_000);
    return outcomes.get(tag);
  }

  beforeAll(async () => {
    h = await startHarness();
    model = await startOfflineModel({ apiKey: "offline-test-key" });
    gateway = new LlmGateway({ servers: h.url, creds: h.layout.credsOf("svc-llm"), apiKey: "offline-test-key", baseURL: model.url, timeoutMs: 5000, maxRetries: 1, log: createLogger("llm", "silent") });
    await gateway.start();
    tools = await startScriptedTools(h, { "big-report": () => ({ text: REPORT }) });
    await h.admin.toolRegister({ manifest: scriptedManifest("big-report", "read") });
    const a = await h.register("alice", "principal");
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(a.creds), name: "alice", inboxPrefix: subjects.inboxPrefix("alice") });
    connections.push(nc);
    alice = new SyscallClient(nc, "alice", { retryForMs: 20_000 });
    const c = await h.register("chatty", "agent", ["tool-users"]);
    await h.agent(chatty, c.creds, "chatty");
  });
  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await tools?.close();
    await gateway?.stop();
    await model?.close();
    await h?.close();
  });

  it("logs each long message of a conversation once, and the model still gets the whole conversation", async () => {
    const answers = (await work("chat")) as string[];
    expect(answers).toHaveLength(3);
    // The model saw every message in full on every call.
    const last = model.requests.at(-1) as { system?: unknown; messages: { content: unknown }[] };
    expect(last.system).toBe(SYSTEM);
    expect(last.messages.map((m) => m.content)).toEqual([turn(1), answers[0], turn(2), answers[1], turn(3)]);

    const log = await logEvents(h);
    const calls = log.filter((e): e is EffectStartedEvent => e.type === EventType.EffectStarted && e.kind === "llm");
    expect(calls).toHaveLength(3);
    const blobs = log.filter((e): e is BlobEvent => e.type === EventType.Blob);
    // The system prompt and three user turns; the short answers stay inline.
    expect(blobs).toHaveLength(4);
    expect(new Set(blobs.map((b) => b.hash)).size).toBe(4);
    // The third call names the system prompt and the first turn by the blobs the first call stored.
    const third = calls[2] as EffectStartedEvent;
    expect(third.blobs?.["args/system"]).toEqual(calls[0]?.blobs?.["args/system"]);
    expect(third.blobs?.["args/messages/0"]).toEqual(calls[0]?.blobs?.["args/messages/0"]);
    expect(Object.keys(third.blobs ?? {}).sort()).toEqual(["args/messages/0", "args/messages/2", "args/messages/4", "args/system"]);
    expect((third.args as { messages: unknown[] }).messages[0]).toBeNull();
    // The events stay small while the conversation is not, and the log holds each turn once
    // where inline it would hold turn 1 three times, turn 2 twice.
    for (const e of calls) expect(encode(e).length).toBeLessThan(BLOB_MIN_BYTES);
    const inline = model.requests.slice(-3).reduce((n, r) => n + encode(r).length, 0);
    const stored = [...calls, ...blobs].reduce((n, e) => n + encode(e).length, 0);
    expect(inline).toBeGreaterThan(35_000);
    expect(stored).toBeLessThan(inline * 0.6);
  });

  it("logs a large tool result by hash once, and gives the agent the result itself", async () => {
    expect(await work("report")).toEqual([REPORT.length, true]);
    expect(tools.calls.filter((c) => c.target === "big-report")).toHaveLength(2);
    const log = await logEvents(h);
    const results = log.filter((e): e is EffectCompletedEvent => e.type === EventType.EffectCompleted && e.target === "big-report");
    expect(results).toHaveLength(2);
    for (const r of results) {
      expect(r.result).toBeNull();
      expect(r.blobs?.["result"]?.size).toBeGreaterThan(REPORT.length);
    }
    expect(results[0]?.blobs?.["result"]).toEqual(results[1]?.blobs?.["result"]);
    expect(log.filter((e) => e.type === EventType.Blob && e.seq === results[0]?.blobs?.["result"]?.seq)).toHaveLength(1);
  });

  it("answers a repeated syscall with the value read back from its blob", async () => {
    const raw = await h.register("raw", "agent", ["tool-users"]);
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(raw.creds), name: "raw", inboxPrefix: subjects.inboxPrefix("raw") });
    connections.push(nc);
    const client = new SyscallClient(nc, "raw");
    const id = syscallId(`r-${newScope()}`, 0);
    const first = (await client.call(SyscallOp.Tool, { id, to: "big-report", body: { quarter: "q4" } })) as { effect: { result: { text: string } }; seq: number };
    const again = (await client.call(SyscallOp.Tool, { id, to: "big-report", body: { quarter: "q4" } })) as { effect: { result: { text: string } }; seq: number };
    expect(first.effect.result.text).toBe(REPORT);
    expect(again.seq).toBe(first.seq);
    expect(again.effect.result.text).toBe(REPORT);
    expect(tools.calls.filter((c) => (c.args as { quarter?: string }).quarter === "q4")).toHaveLength(1);
  });

  it("replays the agent identically once the parts are back in place (and not without them)", async () => {
    const log = await logEvents(h);
    const resolved = await resolveBlobs(log, async () => [], new Map(log.filter((e): e is BlobEvent => e.type === EventType.Blob).map((b) => [b.seq, encode(b)])));
    const report = await replayAgent(chatty, resolved, { name: "chatty" });
    expect(report.identical).toBe(true);
    // Three model calls and two tool calls.
    expect(report.syscalls).toBe(5);
    const unresolved = await replayAgent(chatty, log as LogEvent[], { name: "chatty" });
    expect(unresolved.identical).toBe(false);
  });

  it("keeps the log verifiable, blobs included, every event as the published schema describes it", async () => {
    for (const e of await logEvents(h)) expect(() => parseLogEvent(e)).not.toThrow();
    const verified = await runCli(["--data", h.dir, "--nats", h.url, "verify"]);
    expect(verified.stdout).toMatch(/^ok:/);
    expect(verified.code).toBe(0);
  });
});
