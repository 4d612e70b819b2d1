/**
 * The offline model against the real Anthropic SDK: if the SDK can talk to it (JSON, streaming,
 * tool use, its retry and error classes), tests and demos can use it in place of the API.
 */
import Anthropic, { APIConnectionTimeoutError, APIError, AuthenticationError, BadRequestError, InternalServerError, OverloadedError, RateLimitError } from "@anthropic-ai/sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { OFFLINE_MODEL, estimateTokens, startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";

const KEY = "sk-ant-offline-test-key-0123456789";

describe("offline model", () => {
  let model: OfflineModel;
  let client: Anthropic;

  beforeAll(async () => {
    model = await startOfflineModel({ apiKey: KEY });
    client = new Anthropic({ apiKey: KEY, baseURL: model.url, maxRetries: 2, logLevel: "off" });
  });
  afterAll(async () => {
    await model.close();
  });
  afterEach(() => {
    model.requests.length = 0;
    expect(model.pending()).toBe(0);
  });

  it("answers unscripted requests as maxwell-offline, saying so, with usage estimated from the text", async () => {
    const content = "Summarize the quarterly numbers for me, please.";
    const message = await client.messages.create({ model: "claude-sonnet-4-6", max_tokens: 200, messages: [{ role: "user", content }] });
    expect(message.model).toBe(OFFLINE_MODEL);
    expect(message.type).toBe("message");
    expect(message.role).toBe("assistant");
    expect(message.id).toMatch(/^msg_offline_/);
    expect(message.stop_reason).toBe("end_turn");
    const text = message.content[0]?.type === "text" ? message.content[0].text : "";
    expect(text).toContain("[maxwell-offline]");
    expect(text).toContain("not Claude");
    expect(text).toContain(content);
    expect(message.usage.input_tokens).toBe(estimateTokens(content));
    expect(message.usage.output_tokens).toBe(estimateTokens(text));
    expect(model.requests).toHaveLength(1);
    expect(model.requests[0]?.["model"]).toBe("claude-sonnet-4-6");
  });

  it("answers the same request the same way every time", async () => {
    const ask = () => client.messages.create({ model: "m", max_tokens: 100, messages: [{ role: "user", content: "hello there" }] });
    const [a, b] = [await ask(), await ask()];
    expect(b.content).toEqual(a.content);
    expect(b.usage).toEqual(a.usage);
  });

  it("stops at max_tokens when its answer would be longer", async () => {
    const message = await client.messages.create({ model: "m", max_tokens: 5, messages: [{ role: "user", content: "a long question about many things" }] });
    expect(message.stop_reason).toBe("max_tokens");
    expect(message.content[0]?.type === "text" ? message.content[0].text.length : 0).toBe(20);
  });

  it("streams the API's event sequence, and the SDK assembles the same message as the JSON answer", async () => {
    model.script({ content: "The quick brown fox jumps over the lazy dog." });
    const stream = client.messages.stream({ model: "claude-haiku-4-5", max_tokens: 100, messages: [{ role: "user", content: "go" }] });
    const events: string[] = [];
    const deltas: string[] = [];
    for await (const event of stream) {
      events.push(event.type);
      if (event.type === "content_block_delta" && event.delta.type === "text_delta") deltas.push(event.delta.text);
    }
    const message = await stream.finalMessage();
    expect(events[0]).toBe("message_start");
    expect(events[1]).toBe("content_block_start");
    expect(events.slice(-3)).toEqual(["content_block_stop", "message_delta", "message_stop"]);
    expect(events.filter((e) => e === "content_block_delta").length).toBeGreaterThan(1);
    expect(deltas.join("")).toBe("The quick brown fox jumps over the lazy dog.");
    expect(message.model).toBe("claude-haiku-4-5");
    expect(message.content).toEqual([{ type: "text", text: "The quick brown fox jumps over the lazy dog." }]);
    expect(message.stop_reason).toBe("end_turn");
    expect(message.usage.output_tokens).toBe(estimateTokens("The quick brown fox jumps over the lazy dog."));
    expect(model.requests[0]?.["stream"]).toBe(true);
  });

  it("round-trips a tool_use block, streamed as input_json_delta, and receives the tool_result", async () => {
    const input = { city: "Paris", days: 3, units: { temperature: "celsius" } };
    model.script({ content: [{ type: "text", text: "Let me look." }, { type: "tool_use", id: "toolu_1", name: "forecast", input }] });
    const tools = [{ name: "forecast", description: "weather", input_schema: { type: "object" as const, properties: { city: { type: "string" } } } }];
    const stream = client.messages.stream({ model: "m", max_tokens: 100, tools, messages: [{ role: "user", content: "weather in Paris?" }] });
    const partials: string[] = [];
    stream.on("inputJson", (partial) => partials.push(partial));
    const first = await stream.finalMessage();
    expect(first.stop_reason).toBe("tool_use");
    expect(first.content[1]).toEqual({ type: "tool_use", id: "toolu_1", name: "forecast", input });
    expect(partials.join("")).toBe(JSON.stringify(input));
    expect(partials.length).toBeGreaterThan(1);

    model.script((request) => {
      const last = (request["messages"] as { content: unknown }[]).at(-1)?.content as { type: string; tool_use_id: string; content: string }[];
      return { content: `tool said: ${last[0]?.content ?? "nothing"}` };
    });
    const second = await client.messages.create({
      model: "m",
      max_tokens: 100,
      tools,
      messages: [
        { role: "user", content: "weather in Paris?" },
        { role: "assistant", content: first.content },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "sunny, 24C" }] },
      ],
    });
    expect(second.content).toEqual([{ type: "text", text: "tool said: sunny, 24C" }]);
    const sent = model.requests[1]?.["messages"] as { content: unknown }[];
    expect(sent[1]?.content).toEqual([{ type: "text", text: "Let me look." }, { type: "tool_use", id: "toolu_1", name: "forecast", input }]);
  });

  it("answers 429 with retry-after, which the SDK waits out and retries", async () => {
    model.script({ error: { status: 429 }, retryAfterMs: 20 }, { content: "after the wait" });
    const { data, response } = await client.messages.create({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).withResponse();
    expect(data.content).toEqual([{ type: "text", text: "after the wait" }]);
    expect(response.headers.get("request-id")).toMatch(/^req_offline_\d{6}$/);
    expect(model.requests).toHaveLength(2);
  });

  it("keeps answering 500 until the SDK's retries are exhausted", async () => {
    model.script(...[1, 2, 3].map(() => ({ error: { status: 500 }, retryAfterMs: 5 })));
    const err = await client.messages.create({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InternalServerError);
    expect((err as APIError).status).toBe(500);
    expect((err as APIError).type).toBe("api_error");
    expect(model.requests).toHaveLength(3);
  });

  it("answers errors with the API's bodies: 529 overloaded, 400 invalid request, 429 rate limit", async () => {
    const once = new Anthropic({ apiKey: KEY, baseURL: model.url, maxRetries: 0, logLevel: "off" });
    const ask = () => once.messages.create({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    model.script({ error: { status: 529 } }, { error: { status: 400, message: "messages: roles must alternate" } }, { error: { status: 429 }, retryAfterMs: 2500 });
    const overloaded = await ask();
    expect(overloaded).toBeInstanceOf(OverloadedError);
    expect((overloaded as APIError).type).toBe("overloaded_error");
    const bad = await ask();
    expect(bad).toBeInstanceOf(BadRequestError);
    expect((bad as APIError).apiMessage).toBe("messages: roles must alternate");
    expect((bad as APIError).error).toEqual({ type: "error", error: { type: "invalid_request_error", message: "messages: roles must alternate" }, request_id: expect.stringMatching(/^req_offline_/) });
    const limited = await ask();
    expect(limited).toBeInstanceOf(RateLimitError);
    expect((limited as APIError).headers?.get("retry-after")).toBe("3");
    expect((limited as APIError).headers?.get("retry-after-ms")).toBe("2500");
  });

  it("refuses a wrong key with 401 authentication_error", async () => {
    const wrong = new Anthropic({ apiKey: "sk-ant-wrong-key-9999999999", baseURL: model.url, maxRetries: 0, logLevel: "off" });
    const err = await wrong.messages.create({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as APIError).type).toBe("authentication_error");
  });

  it("refuses a request the API would refuse, with invalid_request_error naming the field", async () => {
    const post = (body: unknown, headers: Record<string, string> = { "anthropic-version": "2023-06-01" }) =>
      fetch(`${model.url}/v1/messages`, { method: "POST", headers: { "x-api-key": KEY, "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
    const noMax = await post({ model: "m", messages: [{ role: "user", content: "hi" }] });
    expect(noMax.status).toBe(400);
    expect(await noMax.json()).toMatchObject({ type: "error", error: { type: "invalid_request_error", message: expect.stringContaining("max_tokens") } });
    const badRole = await post({ model: "m", max_tokens: 5, messages: [{ role: "system", content: "hi" }] });
    expect(((await badRole.json()) as { error: { message: string } }).error.message).toContain("messages.0.role");
    const noVersion = await post({ model: "m", max_tokens: 5, messages: [{ role: "user", content: "hi" }] }, {});
    expect(noVersion.status).toBe(400);
    const elsewhere = await fetch(`${model.url}/v1/complete`, { method: "POST", headers: { "x-api-key": KEY }, body: "{}" });
    expect(elsewhere.status).toBe(404);
    expect(((await elsewhere.json()) as { error: { type: string } }).error.type).toBe("not_found_error");
  });

  it("can be slower than the client's timeout", async () => {
    const impatient = new Anthropic({ apiKey: KEY, baseURL: model.url, maxRetries: 0, timeout: 100, logLevel: "off" });
    model.script({ content: "too late", delayMs: 5_000 });
    const err = await impatient.messages.create({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIConnectionTimeoutError);
  });

  it("can fail in the middle of a stream, as the API does when it overloads", async () => {
    model.script({ error: { status: 529 }, midStream: true });
    const stream = client.messages.stream({ model: "m", max_tokens: 50, messages: [{ role: "user", content: "hi" }] });
    const err = await stream.finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBeUndefined();
    expect((err as APIError).type).toBe("overloaded_error");
    expect(model.requests).toHaveLength(1);
  });

  it("takes answers from a function of the request when nothing is queued", async () => {
    const echo = await startOfflineModel({ respond: (request) => ({ content: `max_tokens was ${String(request["max_tokens"])}` }) });
    try {
      const c = new Anthropic({ apiKey: "anything", baseURL: echo.url, logLevel: "off" });
      const message = await c.messages.create({ model: "m", max_tokens: 42, messages: [{ role: "user", content: "hi" }] });
      expect(message.content).toEqual([{ type: "text", text: "max_tokens was 42" }]);
    } finally {
      await echo.close();
    }
  });
});
