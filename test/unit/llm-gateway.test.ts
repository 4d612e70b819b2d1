/**
 * The gateway's model calls, without NATS: the real SDK against the offline model, scripted to
 * fail the ways the API fails. What the kernel gets back must be a typed reply every time.
 */
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { decodeMap, encode } from "../../src/protocol/codec.js";
import type { EventId, TraceId } from "../../src/protocol/ids.js";
import type { ServiceCall } from "../../src/protocol/services.js";
import { LlmGateway, type LlmGatewayOptions } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { errorOf } from "../support/service-replies.js";

const KEY = "sk-ant-api03-gateway-unit-test-secret-key";

let effects = 0;
function callOf(args: Record<string, unknown>, over: Partial<ServiceCall> = {}): ServiceCall {
  effects += 1;
  return {
    effect: `effect-${effects}` as EventId,
    seq: effects,
    at: Date.now(),
    op: "complete",
    actor: "worker",
    principal: "alice",
    trace: "trace-1" as TraceId,
    target: typeof args["model"] === "string" ? args["model"] : "",
    args,
    labels: [],
    deadline: Date.now() + 30_000,
    ...over,
  };
}

const ask = (content = "hello", model = "claude-haiku-4-5"): Record<string, unknown> => ({ model, max_tokens: 100, messages: [{ role: "user", content }] });

describe("llm gateway model calls", () => {
  let model: OfflineModel;
  const logLines: string[] = [];
  const log = pino({ level: "debug" }, new Writable({ write: (chunk: Buffer, _enc, done) => (logLines.push(chunk.toString()), done()) }));

  function gateway(over: Partial<LlmGatewayOptions> = {}): LlmGateway {
    return new LlmGateway({ servers: "nats://unused", creds: new Uint8Array(), apiKey: KEY, baseURL: model.url, maxRetries: 2, log, ...over });
  }

  beforeAll(async () => {
    model = await startOfflineModel({ apiKey: KEY });
  });
  afterAll(async () => {
    await model.close();
  });
  afterEach(() => {
    model.requests.length = 0;
    expect(model.pending()).toBe(0);
  });

  it("answers with the full Message and the usage to settle, as plain msgpack the kernel can decode", async () => {
    model.script({ content: "four", usage: { input_tokens: 12, output_tokens: 3 } });
    const reply = await gateway().complete(callOf(ask("2+2?")));
    expect(reply).toEqual({
      ok: true,
      result: {
        id: expect.stringMatching(/^msg_offline_/),
        type: "message",
        role: "assistant",
        model: "claude-haiku-4-5",
        content: [{ type: "text", text: "four" }],
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: { input_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 3, service_tier: "standard" },
      },
      usage: { model: "claude-haiku-4-5", inputTokens: 12, outputTokens: 3 },
    });
    expect(decodeMap(encode(reply))).toEqual(reply);
    expect(model.requests[0]?.["stream"]).toBe(true);
  });

  it("returns tool_use blocks with their input as plain data", async () => {
    model.script({ content: [{ type: "tool_use", id: "toolu_9", name: "lookup", input: { q: "nats", n: 2 } }] });
    const tools = [{ name: "lookup", input_schema: { type: "object" } }];
    const reply = await gateway().complete(callOf({ ...ask("find"), tools }));
    if (!reply.ok) throw new Error(reply.error.message);
    const result = reply.result as { content: unknown[]; stop_reason: string };
    expect(result.stop_reason).toBe("tool_use");
    expect(result.content).toEqual([{ type: "tool_use", id: "toolu_9", name: "lookup", input: { q: "nats", n: 2 } }]);
    expect(decodeMap(encode(reply))).toEqual(reply);
  });

  it("retries a 429 after the API's retry-after, then answers", async () => {
    model.script({ error: { status: 429 }, retryAfterMs: 10 }, { content: "ok now" });
    const reply = await gateway().complete(callOf(ask()));
    expect(reply.ok).toBe(true);
    expect(model.requests).toHaveLength(2);
  });

  it("answers unavailable once 500s have used up the retries", async () => {
    model.script(...[1, 2, 3].map(() => ({ error: { status: 500 }, retryAfterMs: 5 })));
    const error = errorOf(await gateway().complete(callOf(ask())));
    expect(error.code).toBe("unavailable");
    expect(error.message).toContain("retries exhausted");
    expect(error.detail).toMatchObject({ status: 500, type: "api_error", requestId: expect.stringMatching(/^req_offline_/) });
    expect(model.requests).toHaveLength(3);
  });

  it("answers unavailable when the API stays overloaded (529)", async () => {
    model.script(...[1, 2].map(() => ({ error: { status: 529 }, retryAfterMs: 5 })));
    const error = errorOf(await gateway({ maxRetries: 1 }).complete(callOf(ask())));
    expect(error.code).toBe("unavailable");
    expect(error.detail).toMatchObject({ status: 529, type: "overloaded_error" });
    expect(model.requests).toHaveLength(2);
  });

  it("retries a stream the API broke off with an overload, then answers", async () => {
    model.script({ error: { status: 529 }, midStream: true }, { content: "second try" });
    const reply = await gateway().complete(callOf(ask()));
    expect(reply.ok && (reply.result as { content: unknown }).content).toEqual([{ type: "text", text: "second try" }]);
    expect(model.requests).toHaveLength(2);
  });

  it("answers unauthorized for a refused key, and the key appears in no reply and no log line", async () => {
    logLines.length = 0;
    model.script({ error: { status: 401, message: `invalid x-api-key: ${KEY}` } });
    const error = errorOf(await gateway().complete(callOf(ask())));
    expect(error.code).toBe("unauthorized");
    expect(error.message).toContain("ANTHROPIC_API_KEY");
    expect(error.message).toContain("[redacted]");
    expect(JSON.stringify(error)).not.toContain(KEY);
    expect(JSON.stringify(error)).not.toContain("sk-ant-");
    expect(logLines.length).toBeGreaterThan(0);
    expect(logLines.join("")).not.toContain(KEY);
    expect(model.requests).toHaveLength(1);
  });

  it("maps the API's 400 to bad_request and 404 to not_found", async () => {
    model.script({ error: { status: 400, message: "messages: roles must alternate" } }, { error: { status: 404, message: "model: claude-nope" } });
    const bad = errorOf(await gateway().complete(callOf(ask())));
    expect(bad.code).toBe("bad_request");
    expect(bad.message).toContain("roles must alternate");
    const missing = errorOf(await gateway().complete(callOf(ask("hi", "claude-nope"))));
    expect(missing.code).toBe("not_found");
  });

  it("answers timeout when the model is slower than the call's deadline", async () => {
    model.script({ content: "too late", delayMs: 10_000 });
    const started = Date.now();
    const error = errorOf(await gateway().complete(callOf(ask(), { deadline: Date.now() + 300 })));
    expect(error.code).toBe("timeout");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("answers timeout without calling the model when the deadline has already passed", async () => {
    const error = errorOf(await gateway().complete(callOf(ask(), { deadline: Date.now() - 1 })));
    expect(error.code).toBe("timeout");
    expect(model.requests).toHaveLength(0);
  });

  it("sends an agent's calls where the route table says", async () => {
    const g = gateway({ routes: [{ agent: "worker", model: "claude-opus-*", to: "claude-haiku-4-5" }] });
    model.script({ content: "cheap" }, { content: "dear" });
    const routed = await g.complete(callOf(ask("hi", "claude-opus-4-7")));
    const untouched = await g.complete(callOf(ask("hi", "claude-opus-4-7"), { actor: "planner" }));
    expect(model.requests.map((r) => r["model"])).toEqual(["claude-haiku-4-5", "claude-opus-4-7"]);
    expect(routed.ok && routed.usage?.model).toBe("claude-haiku-4-5");
    expect(untouched.ok && untouched.usage?.model).toBe("claude-opus-4-7");
  });

  it("refuses bad args before calling the model", async () => {
    const error = errorOf(await gateway().complete(callOf({ model: "m", messages: [] })));
    expect(error.code).toBe("bad_request");
    expect(model.requests).toHaveLength(0);
  });

  describe("idempotency per effect id", () => {
    it("answers a repeated effect from memory, without calling the model again", async () => {
      const g = gateway();
      const call = callOf(ask());
      const first = await g.complete(call);
      const again = await g.complete({ ...call });
      expect(again).toEqual(first);
      expect(model.requests).toHaveLength(1);
    });

    it("joins a repeat that arrives while the first call is still running", async () => {
      model.script({ content: "slow", delayMs: 100 });
      const g = gateway();
      const call = callOf(ask());
      const [a, b] = await Promise.all([g.complete(call), g.complete({ ...call })]);
      expect(b).toEqual(a);
      expect(model.requests).toHaveLength(1);
    });

    it("refuses the same effect id with different arguments as a conflict", async () => {
      const g = gateway();
      const call = callOf(ask("one"));
      await g.complete(call);
      const error = errorOf(await g.complete({ ...call, args: ask("two") }));
      expect(error.code).toBe("conflict");
      expect(model.requests).toHaveLength(1);
    });

    it("calls the model again for an effect whose first try failed transiently", async () => {
      model.script({ error: { status: 503 } });
      const g = gateway({ maxRetries: 0 });
      const call = callOf(ask());
      expect(errorOf(await g.complete(call)).code).toBe("unavailable");
      expect((await g.complete(call)).ok).toBe(true);
      expect(model.requests).toHaveLength(2);
    });

    it("remembers a bounded number of replies, forgetting the oldest", async () => {
      const g = gateway({ cacheSize: 2 });
      const [a, b, c] = [callOf(ask("a")), callOf(ask("b")), callOf(ask("c"))];
      for (const call of [a, b, c]) await g.complete(call);
      await g.complete(c);
      await g.complete(b);
      expect(model.requests).toHaveLength(3);
      await g.complete(a);
      expect(model.requests).toHaveLength(4);
    });
  });
});
