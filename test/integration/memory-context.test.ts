/**
 * Context assembly end to end: an agent writes memories through a real kernel and the real
 * memory service, assembles a context for a question within a token budget, and hands it to a
 * model through the kernel and the LLM gateway (the offline model). What went in, what was left
 * out and why, the labels, and the prompt the kernel logged are checked against each other.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, SyscallOp, newScope, subjects, syscallId } from "../../src/protocol/mod.js";
import { spawnService, type ServiceProcess } from "../../src/runtime/deployment.js";
import { createLogger } from "../../src/runtime/logger.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { LeftOutReason, MEMORY_HEADING, assembleContext, estimateTokens, type AssembledContext, type LlmResponse, type TextBlock } from "../../src/sdk/mod.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { logEvents, recordingAgent, startHarness, until, type Harness } from "../support/harness.js";

const BUDGET = 400;
const SYSTEM = "You are the on-call assistant.";
const QUESTION = "The lmdb reader is stuck again. What do we know?";

describe("context assembly through the kernel", () => {
  let h: Harness;
  let memory: ServiceProcess;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let alice: SyscallClient;
  const connections: NatsConnection[] = [];
  const outcomes = new Map<string, unknown>();

  async function run(tag: string): Promise<unknown> {
    await alice.call(SyscallOp.Send, { id: syscallId(`t-${newScope()}`, 0), to: "keeper", body: { tag } });
    await until(() => outcomes.has(tag), tag, 30_000);
    return outcomes.get(tag);
  }

  beforeAll(async () => {
    h = await startHarness();
    memory = spawnService("memory", ["--data", h.dir, "--nats", h.url], { readyTimeoutMs: 60_000 });
    await memory.ready;
    model = await startOfflineModel({ apiKey: "offline-test-key" });
    gateway = new LlmGateway({ servers: h.url, creds: h.layout.credsOf("svc-llm"), apiKey: "offline-test-key", baseURL: model.url, log: createLogger("llm", "silent") });
    await gateway.start();
    const a = await h.register("alice", "principal");
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(a.creds), name: "alice", inboxPrefix: subjects.inboxPrefix("alice") });
    connections.push(nc);
    alice = new SyscallClient(nc, "alice", { retryForMs: 20_000 });

    const keeper = await h.register("keeper", "agent");
    await h.agent(
      recordingAgent(outcomes, async (b, ctx) => {
        if (b.tag === "remember") {
          const ns = "agent:keeper";
          await ctx.memory(ns, "put", { key: "runbook", value: "restart the lmdb reader when its reader table is full", tags: ["ops"] });
          // Derived from a web page: the record stays labelled untrusted wherever it goes.
          await ctx.memory(ns, "put", { key: "forum-tip", value: "lmdb reader slots leak when a transaction is left open", labels: ["untrusted"] });
          await ctx.memory(ns, "put", { key: "postmortem", value: `lmdb reader incident, minute by minute: ${"the reader waited. ".repeat(120)}` });
          await ctx.memory(ns, "put", { key: "lunch", value: "the team eats at noon on fridays" });
          return "remembered";
        }
        const assembled = await assembleContext(ctx, {
          budgetTokens: BUDGET,
          system: SYSTEM,
          working: [
            { role: "user", content: `Here is yesterday's full chat log: ${"nothing happened. ".repeat(120)}` },
            { role: "assistant", content: "Noted." },
            { role: "user", content: QUESTION },
          ],
          namespaces: ["agent:keeper"],
          query: "lmdb reader",
          k: 5,
        });
        const answer = await ctx.llm({ model: "maxwell-offline", max_tokens: 200, system: assembled.system, messages: assembled.messages });
        return { assembled, answer };
      }),
      keeper.creds,
      "keeper",
    );
  });
  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await gateway?.stop(0);
    await model?.close();
    if (memory && memory.child.exitCode === null) {
      memory.child.kill("SIGTERM");
      await memory.exited;
    }
    await h?.close();
  });

  it("fills the budget from working items and recalled memories, says what it left out, and the model gets exactly that", async () => {
    expect(await run("remember")).toBe("remembered");
    const outcome = (await run("assemble")) as { assembled: AssembledContext; answer: LlmResponse } | { error: string; message: string };
    if ("error" in outcome) throw new Error(`the agent failed: ${outcome.error}: ${outcome.message}`);
    const { assembled, answer } = outcome;

    // What went in: the recent turns, and the memories that match and fit.
    expect(assembled.included.filter((i) => i.kind === "working").map((i) => i.id)).toEqual(["working:1", "working:2"]);
    expect(assembled.included.filter((i) => i.kind === "memory").map((i) => i.id).sort()).toEqual(["agent:keeper/forum-tip", "agent:keeper/runbook"]);
    // What did not, and why: the long memory and the long old turn did not fit; the unrelated memory never matched.
    expect(assembled.leftOut).toEqual([
      { kind: "working", id: "working:0", tokens: estimateTokens(`Here is yesterday's full chat log: ${"nothing happened. ".repeat(120)}`), why: LeftOutReason.Budget, detail: expect.any(String) as unknown },
      { kind: "memory", id: "agent:keeper/postmortem", tokens: expect.any(Number) as unknown, why: LeftOutReason.Budget, detail: expect.any(String) as unknown },
    ]);
    expect(JSON.stringify(assembled)).not.toContain("noon");

    // The accounting adds up and stays within the budget.
    const t = assembled.tokens;
    expect(t.budget).toBe(BUDGET);
    expect(t.used).toBe(t.system + t.working + t.memory);
    expect(t.used).toBeLessThanOrEqual(BUDGET);
    expect(t.system).toBe(estimateTokens(SYSTEM));
    const sum = (kind: string): number => assembled.included.filter((i) => i.kind === kind).reduce((n, i) => n + i.tokens, 0);
    expect(t.working).toBe(sum("working"));
    expect(t.memory).toBe(sum("memory") + estimateTokens(MEMORY_HEADING));

    // The untrusted memory is fenced and carries its provenance; its label is the context's.
    const blocks = assembled.messages[0]?.content as TextBlock[];
    const tip = blocks.find((b) => b.text.startsWith("[memory agent:keeper/forum-tip:"))?.text ?? "";
    expect(tip).toMatch(/by keeper for alice; event \S+; labels untrusted\]\n<<UNTRUSTED-DATA [0-9a-f]{16} from memory:agent:keeper\/forum-tip>>/);
    expect(blocks.find((b) => b.text.startsWith("[memory agent:keeper/runbook:"))?.text).not.toContain("UNTRUSTED-DATA");
    expect(assembled.labels).toEqual(["untrusted"]);

    // The model was called with exactly the assembled context, and its answer is labelled with it.
    const log = await logEvents(h);
    const call = log.find((e) => e.type === EventType.EffectStarted && e.kind === "llm" && e.actor === "keeper") as unknown as { args: { system: string; messages: unknown[] } };
    expect(call.args.system).toBe(SYSTEM);
    expect(call.args.messages).toEqual(assembled.messages);
    expect(answer.message.content[0]?.text).toContain("lmdb reader is stuck again");
    expect(answer.labels).toContain("untrusted");
    // The offline model counts the prompt it read the same way (characters / 4), joined by newlines.
    expect(answer.message.usage.input_tokens).toBeLessThanOrEqual(t.used + blocks.length + assembled.messages.length);
  });
});
