/**
 * The model gateway over a real nats-server: called as the kernel calls it, with the kernel's
 * credential, on `mx.svc.llm.complete`, and answering through the real SDK from the offline
 * model. Then the built daemon: it starts, says ready, answers, and stops on SIGTERM.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeMap, encode } from "../../src/protocol/codec.js";
import type { EventId, TraceId } from "../../src/protocol/ids.js";
import { ServiceName, serviceSubjects, type ServiceCall, type ServiceReply } from "../../src/protocol/services.js";
import { spawnService, startEmbedded, type EmbeddedServer } from "../../src/runtime/deployment.js";
import { createLogger } from "../../src/runtime/logger.js";
import { connectNats, requestRaw, type NatsConnection } from "../../src/transport/connection.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { OFFLINE_MODEL, startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { until } from "../support/harness.js";
import { errorOf } from "../support/service-replies.js";

const KEY = "sk-ant-api03-integration-secret-key-000";
const COMPLETE = serviceSubjects.call(ServiceName.Llm, "complete");
const quiet = createLogger("llm-test", process.env["MAXWELL_TEST_LOG"] ?? "silent");

let effects = 0;
function callOf(args: unknown, over: Partial<ServiceCall> = {}): ServiceCall {
  effects += 1;
  return {
    effect: `01JLLMTEST${String(effects).padStart(16, "0")}` as EventId,
    seq: effects,
    at: Date.now(),
    op: "complete",
    actor: "worker",
    principal: "alice",
    trace: "trace-llm" as TraceId,
    target: "",
    args,
    labels: [],
    deadline: Date.now() + 20_000,
    ...over,
  };
}

const ask = (content: string, model = "claude-haiku-4-5"): Record<string, unknown> => ({ model, max_tokens: 200, messages: [{ role: "user", content }] });

async function request(nc: NatsConnection, data: Uint8Array, subject = COMPLETE): Promise<ServiceReply> {
  return decodeMap(await requestRaw(nc, subject, data, { timeoutMs: 15_000 })) as unknown as ServiceReply;
}

describe("llm gateway over NATS", () => {
  let dir: string;
  let embedded: EmbeddedServer;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let kernel: NatsConnection;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-llm-"));
    embedded = await startEmbedded({ dataDir: dir });
    model = await startOfflineModel({ apiKey: KEY });
    gateway = new LlmGateway({
      servers: embedded.server.url,
      creds: embedded.layout.credsOf(serviceSubjects.identity(ServiceName.Llm)),
      apiKey: KEY,
      baseURL: model.url,
      routes: [{ agent: "summarizer", to: "claude-haiku-4-5" }],
      maxRetries: 1,
      maxRequestBytes: 64 * 1024,
      log: quiet,
    });
    await gateway.start();
    kernel = await connectNats({ servers: embedded.server.url, creds: embedded.layout.credsOf("kernel"), name: "test-kernel", reconnect: false });
  });

  afterAll(async () => {
    await kernel?.close();
    await gateway?.stop(100);
    await model?.close();
    await embedded?.server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers the kernel's complete call with the Message and its usage", async () => {
    const reply = await request(kernel, encode(callOf(ask("What is in the quarterly report?"))));
    if (!reply.ok) throw new Error(reply.error.message);
    const message = reply.result as { model: string; content: { type: string; text: string }[]; usage: { input_tokens: number; output_tokens: number } };
    expect(message.model).toBe(OFFLINE_MODEL);
    expect(message.content[0]?.text).toContain("What is in the quarterly report?");
    expect(reply.usage).toEqual({ model: OFFLINE_MODEL, inputTokens: message.usage.input_tokens, outputTokens: message.usage.output_tokens });
    expect(model.requests.at(-1)?.["model"]).toBe("claude-haiku-4-5");
  });

  it("sends an agent's calls where the route table says", async () => {
    model.script({ content: "short summary" });
    const reply = await request(kernel, encode(callOf(ask("summarize", "claude-opus-4-7"), { actor: "summarizer" })));
    expect(reply.ok && reply.usage?.model).toBe("claude-haiku-4-5");
    expect(model.requests.at(-1)?.["model"]).toBe("claude-haiku-4-5");
  });

  it("answers a repeated effect id from memory: the model sees one request", async () => {
    const before = model.requests.length;
    const bytes = encode(callOf(ask("only once")));
    const first = await request(kernel, bytes);
    const second = await request(kernel, bytes);
    expect(first.ok).toBe(true);
    expect(second).toEqual(first);
    expect(model.requests.length - before).toBe(1);
  });

  it("refuses bad args with bad_request, naming the field, without calling the model", async () => {
    const before = model.requests.length;
    const error = errorOf(await request(kernel, encode(callOf({ model: "claude-haiku-4-5", messages: [{ role: "user", content: "x" }] }))));
    expect(error.code).toBe("bad_request");
    expect(error.message).toContain("max_tokens");
    expect(model.requests.length).toBe(before);
  });

  it("answers malformed calls with bad_request and goes on serving", async () => {
    const garbage = await request(kernel, new Uint8Array([0xc1, 0xff, 0x00]));
    expect(errorOf(garbage).code).toBe("bad_request");
    const notAMap = await request(kernel, encode([1, 2, 3]));
    expect(errorOf(notAMap).message).toContain("map");
    const { effect: _effect, ...withoutEffect } = callOf(ask("x"));
    const noEffect = await request(kernel, encode(withoutEffect));
    expect(errorOf(noEffect).message).toContain("effect");
    const oversize = await request(kernel, encode(callOf(ask("y".repeat(80 * 1024)))));
    expect(errorOf(oversize).message).toMatch(/at most 65536/);
    const unknownOp = await request(kernel, encode(callOf(ask("x"), { op: "embed" })), serviceSubjects.call(ServiceName.Llm, "embed"));
    expect(errorOf(unknownOp).message).toContain("no operation 'embed'");
    const mismatched = await request(kernel, encode(callOf(ask("x"), { op: "embed" })));
    expect(errorOf(mismatched).code).toBe("bad_request");
    const still = await request(kernel, encode(callOf(ask("still there?"))));
    expect(still.ok).toBe(true);
  });

  it("carries the API's failures across the wire as typed errors without the key", async () => {
    model.script({ error: { status: 401, message: `invalid x-api-key ${KEY}` } }, ...[1, 2].map(() => ({ error: { status: 529 }, retryAfterMs: 5 })));
    const unauthorized = errorOf(await request(kernel, encode(callOf(ask("a")))));
    expect(unauthorized.code).toBe("unauthorized");
    expect(JSON.stringify(unauthorized)).not.toContain(KEY);
    const overloaded = errorOf(await request(kernel, encode(callOf(ask("b")))));
    expect(overloaded.code).toBe("unavailable");
  });

  it("on stop, abandons a call the model has not answered and says so", async () => {
    model.script({ content: "never sent", delayMs: 30_000 });
    const before = model.requests.length;
    const pending = request(kernel, encode(callOf(ask("slow"))));
    await until(() => model.requests.length > before, "the model to receive the call");
    await gateway.stop(50);
    const error = errorOf(await pending);
    expect(error.code).toBe("unavailable");
    expect(error.message).toContain("stopping");
  });
});

describe("llm daemon", () => {
  let dir: string;
  let embedded: EmbeddedServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-llmd-"));
    embedded = await startEmbedded({ dataDir: dir });
  });

  afterAll(async () => {
    await embedded?.server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("starts without a key on the offline model, says so, answers, and stops on SIGTERM", async () => {
    writeFileSync(join(dir, "llm.json"), JSON.stringify({ routes: [{ agent: "worker", to: "claude-haiku-4-5" }] }));
    const lines: string[] = [];
    const daemon = spawnService("llm", ["--data", dir, "--nats", embedded.server.url], {
      env: { ANTHROPIC_API_KEY: "", MAXWELL_LOG_FORMAT: "json" },
      onLog: (line) => lines.push(line),
    });
    try {
      await daemon.ready;
      expect(lines.some((l) => l.includes("OFFLINE model 'maxwell-offline'"))).toBe(true);
      const kernel = await connectNats({ servers: embedded.server.url, creds: embedded.layout.credsOf("kernel"), name: "test-kernel", reconnect: false });
      try {
        const reply = await request(kernel, encode(callOf(ask("hello daemon", "claude-opus-4-7"))));
        if (!reply.ok) throw new Error(reply.error.message);
        expect(reply.usage?.model).toBe(OFFLINE_MODEL);
        expect(JSON.stringify(reply.result)).toContain("hello daemon");
      } finally {
        await kernel.close();
      }
      const answered = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l["msg"] === "llm call answered");
      expect(answered).toMatchObject({ requested: "claude-opus-4-7", model: "claude-haiku-4-5", answered: OFFLINE_MODEL });
    } finally {
      daemon.child.kill("SIGTERM");
    }
    expect(await daemon.exited).toBe(0);
  });

  it("refuses to start with an API key in its config file, saying where the key belongs", async () => {
    const other = mkdtempSync(join(tmpdir(), "maxwell-llmd-bad-"));
    try {
      writeFileSync(join(other, "llm.json"), JSON.stringify({ apiKey: "sk-ant-in-a-file" }));
      const daemon = spawnService("llm", ["--data", other, "--nats", embedded.server.url], { env: { ANTHROPIC_API_KEY: "" } });
      await expect(daemon.ready).rejects.toThrow(/ANTHROPIC_API_KEY only/);
      expect(await daemon.exited).toBe(1);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
