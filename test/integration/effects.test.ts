/**
 * The action perimeter end to end: an agent reaches models, tools and secrets only through the
 * kernel, with the real tool service (built-in tools), the real model gateway and the Anthropic
 * SDK against the local Messages-API server. Bad input and attacks from issue 5: schema-failing
 * args, path traversal and symlink escape, a fetch outside the allowlist, a canary secret that
 * must appear nowhere, a model's tool_use for a tool the agent is not granted, model overload and
 * gateway timeout (budget reservation released), and a tool manifest changed after pinning.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, EventType, SyscallOp, newScope, subjects, syscallId, type LogEvent } from "../../src/protocol/mod.js";
import { createLogger } from "../../src/runtime/logger.js";
import { packageRoot } from "../../src/runtime/paths.js";
import { SecretStore } from "../../src/runtime/secrets.js";
import { spawnService, type ServiceProcess } from "../../src/runtime/deployment.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { defineAgent, fence, MaxwellError } from "../../src/sdk/mod.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { ToolService, builtinTools, loadToolsConfig } from "../../services/tools/mod.js";
import { eventually, logEvents, recordingAgent, startHarness, until, type Harness } from "../support/harness.js";

const CANARY = "canary-7f3a9c2e51d04b8e";
const AWS_SHAPED = "AKIAIOSFODNN7EXAMPLE";
const DB_PASSWORD = "dbadm-test-0123456789";
const code = (err: unknown): string => (err instanceof MaxwellError ? err.code : String(err));

describe("effects through the kernel: models, tools, secrets", () => {
  let h: Harness;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let tools: ToolService;
  let memory: ServiceProcess;
  let alice: SyscallClient;
  let carolCreds = "";
  const connections: NatsConnection[] = [];
  const outcomes = new Map<string, unknown>();
  const delivered: unknown[] = [];

  const events = (): Promise<LogEvent[]> => logEvents(h);
  function send(to: string, body: { tag: string; [k: string]: unknown }) {
    return alice.call(SyscallOp.Send, { id: syscallId(`t-${newScope()}`, 0), to, body });
  }
  const recording = (work: Parameters<typeof recordingAgent>[1]) => recordingAgent(outcomes, work);

  beforeAll(async () => {
    h = await startHarness({
      policies: `${readFileSync(join(packageRoot, "services", "kernel", "default-policies.cedar"), "utf8")}
@id("tool-users-talk")
permit (principal in Maxwell::Group::"tool-users", action == Maxwell::Action::"message.send", resource in Maxwell::Group::"tool-users");
`,
    });
    const workspace = join(h.dir, "workspace");
    mkdirSync(join(workspace, "notes"), { recursive: true });
    writeFileSync(join(workspace, "notes", "deploy.txt"), `deploy notes\nadmin token: ${CANARY}\naws: ${AWS_SHAPED}\n`);
    symlinkSync("/etc", join(workspace, "notes", "etc-link"));
    writeFileSync(
      join(h.dir, "tools.json"),
      JSON.stringify({
        workspace: { root: workspace },
        fetch: { allow: ["allowed.invalid"] },
        db: { dir: join(h.dir, "db"), adminPasswordSha256: createHash("sha256").update(DB_PASSWORD).digest("hex") },
      }),
    );
    const secrets = SecretStore.forDataDir(h.dir);
    secrets.set("db-admin", DB_PASSWORD);
    secrets.set("deploy-token", CANARY);

    model = await startOfflineModel({ apiKey: "offline-test-key" });
    gateway = new LlmGateway({ servers: h.url, creds: h.layout.credsOf("svc-llm"), apiKey: "offline-test-key", baseURL: model.url, timeoutMs: 1500, maxRetries: 1, log: createLogger("llm", "silent") });
    await gateway.start();
    memory = spawnService("memory", ["--data", h.dir, "--nats", h.url], { readyTimeoutMs: 60_000 });
    await memory.ready;
    tools = new ToolService({ servers: h.url, creds: h.layout.credsOf("svc-tools"), tools: await builtinTools(loadToolsConfig(h.dir)), log: createLogger("tools", "silent") });
    await tools.start();
    const pinned = await h.admin.toolRegister({ service: "tools" });
    expect(pinned.tools.map((t) => t.status)).toEqual(pinned.tools.map(() => "pinned"));

    const r = await h.register("alice", "principal");
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(r.creds), name: "alice", inboxPrefix: subjects.inboxPrefix("alice") });
    connections.push(nc);
    alice = new SyscallClient(nc, "alice", { retryForMs: 20_000 });
    carolCreds = (await h.register("carol", "principal", ["approvers"])).creds;

    const worker = await h.register("worker", "agent", ["tool-users"]);
    await h.agent(
      recording(async (b, ctx) => {
        switch (b.tag) {
          case "bad-args":
            return ctx.tool("file-read", { path: 42 });
          case "traversal":
            return ctx.tool("file-read", { path: "../../../etc/passwd" });
          case "symlink":
            return ctx.tool("file-read", { path: "notes/etc-link/passwd" });
          case "fetch":
            return ctx.tool("http-fetch", { url: "https://example.com/" });
          case "canary": {
            const file = await ctx.tool<{ content: string }>("file-read", { path: "notes/deploy.txt" });
            const answer = await ctx.llm({ model: "maxwell-offline", max_tokens: 100, messages: [{ role: "user", content: `What is in here?\n${fence(file.result.content, "file-read")}` }] });
            await ctx.send("listener", { seen: file.result.content, model: answer.message.content });
            await ctx.memory("agent:worker", "put", { key: "deploy-notes", value: file.result.content });
            const remembered = await ctx.memory<{ record: { value: string } }>("agent:worker", "get", { key: "deploy-notes" });
            return `${file.result.content}\n---\n${remembered.result.record.value}`;
          }
          case "overload":
          case "timeout":
            return ctx.llm({ model: "maxwell-offline", max_tokens: 50, messages: [{ role: "user", content: b.tag }] });
          case "list":
            return ctx.tool("file-list", { path: "notes" });
          case "drop":
            return (await ctx.tool("db-drop", { table: "orders" })).result;
          default:
            throw new Error(`unknown tag ${b.tag}`);
        }
      }),
      worker.creds,
      "worker",
    );
    const listener = await h.register("listener", "agent", ["tool-users"]);
    await h.agent(defineAgent({ onMessage: (msg) => void delivered.push(msg.body) }), listener.creds, "listener");
    const naive = await h.register("naive", "agent");
    await h.agent(
      recording(async (_b, ctx) => {
        // Whatever the model asks for, the agent does: here the model asks for a drop.
        const answer = await ctx.llm({ model: "maxwell-offline", max_tokens: 100, messages: [{ role: "user", content: "tidy up" }] });
        const use = answer.message.content.find((c) => c.type === "tool_use");
        if (!use?.name) return "no tool_use";
        return ctx.tool(use.name, use.input as Record<string, unknown>).then(() => "ran", (err: unknown) => code(err));
      }),
      naive.creds,
      "naive",
    );
  });
  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await tools?.stop(0);
    if (memory && memory.child.exitCode === null) {
      memory.child.kill("SIGTERM");
      await memory.exited;
    }
    await gateway?.stop(0);
    await model?.close();
    await h?.close();
  });

  it("refuses tool args that fail the tool's schema before anything is recorded as an effect", async () => {
    await send("worker", { tag: "bad-args" });
    await until(() => outcomes.has("bad-args"), "the bad call");
    expect(outcomes.get("bad-args")).toMatchObject({ error: ErrorCode.BadRequest });
    expect((outcomes.get("bad-args") as { message: string }).message).toMatch(/'path'/);
    const log = await events();
    expect(log.some((e) => e.type === EventType.EffectStarted && e.target === "file-read" && JSON.stringify(e.args).includes("42"))).toBe(false);
    expect(log.some((e) => e.type === EventType.Rejected && e.actor === "worker")).toBe(true);
  });

  it.each([
    ["a path traversal", "traversal"],
    ["a symlink escape", "symlink"],
  ])("refuses %s in the file tool, and records the refusal", async (_what, tag) => {
    await send("worker", { tag });
    await until(() => outcomes.has(tag), tag);
    expect(outcomes.get(tag)).toMatchObject({ error: ErrorCode.Forbidden });
    const completed = (await events()).filter((e) => e.type === EventType.EffectCompleted && e.target === "file-read" && e.error);
    expect(completed.length).toBeGreaterThan(0);
  });

  it("refuses a fetch to a domain that is not allowed", async () => {
    await send("worker", { tag: "fetch" });
    await until(() => outcomes.has("fetch"), "the fetch");
    expect(outcomes.get("fetch")).toMatchObject({ error: ErrorCode.Forbidden });
    expect((outcomes.get("fetch") as { message: string }).message).toMatch(/example\.com/);
  });

  it("never lets a canary secret reach a delivery, a model prompt, a memory record or the log: it is redacted at the first result", async () => {
    await send("worker", { tag: "canary" });
    await until(() => outcomes.has("canary") && delivered.length > 0, "the canary run");
    expect(String(outcomes.get("canary"))).toMatch(/\[REDACTED:secret\]/);
    expect(String(outcomes.get("canary"))).toMatch(/\[REDACTED:aws-access-key\]/);
    for (const forbidden of [CANARY, AWS_SHAPED, DB_PASSWORD]) {
      expect(JSON.stringify(outcomes.get("canary"))).not.toContain(forbidden);
      expect(JSON.stringify(delivered)).not.toContain(forbidden);
      expect(JSON.stringify(model.requests)).not.toContain(forbidden);
      const raw: string[] = [];
      for await (const e of h.admin.entries(1)) raw.push(Buffer.from(e.data).toString("latin1"));
      expect(raw.join("\n")).not.toContain(forbidden);
    }
    const stored = await h.admin.memory<{ lines: string[] }>({ op: "export", namespace: "agent:worker" });
    expect(JSON.stringify(stored)).toContain("deploy notes");
    for (const forbidden of [CANARY, AWS_SHAPED]) expect(JSON.stringify(stored)).not.toContain(forbidden);
    const read = (await events()).find((e) => e.type === EventType.EffectCompleted && e.target === "file-read" && !e.error && (e.redactions ?? 0) > 0);
    expect(read).toMatchObject({ redactions: 2 });
  });

  it("denies a model's tool_use for a tool the agent is not granted, and the tool never runs", async () => {
    model.script({ content: [{ type: "tool_use", id: "toolu_1", name: "db-drop", input: { table: "customers" } }], stop_reason: "tool_use" });
    await send("naive", { tag: "naive" });
    await until(() => outcomes.has("naive"), "the naive agent");
    expect(outcomes.get("naive")).toBe(ErrorCode.Forbidden);
    const denial = (await events()).find((e) => e.type === EventType.Denied && e.actor === "naive" && e.op === "tool");
    expect(denial).toMatchObject({ to: "db-drop", decision: { effect: "deny" } });
    expect(existsSync(join(h.dir, "db", "customers.json"))).toBe(true);
  });

  it.each([
    ["an overloaded model API (529 on every try)", "overload", ErrorCode.Unavailable],
    ["a gateway timeout", "timeout", ErrorCode.Timeout],
  ])("answers %s with a clear error and releases the budget reservation", async (_what, tag, expected) => {
    if (tag === "overload") model.script({ error: { status: 529, type: "overloaded_error", message: "Overloaded" } }, { error: { status: 529, type: "overloaded_error", message: "Overloaded" } }, { error: { status: 529, type: "overloaded_error", message: "Overloaded" } });
    else model.script({ content: "too late", delayMs: 4000 });
    await send("worker", { tag });
    await until(() => outcomes.has(tag), tag, 20_000);
    expect(outcomes.get(tag)).toMatchObject({ error: expected });
    const rows = await h.admin.budget();
    for (const key of ["agent:worker", "principal:alice"]) {
      const row = rows.find((r) => r.key === key);
      expect(row?.reserved).toEqual({ tokens: 0, microUsd: 0, toolCalls: 0 });
      expect(row?.used.open).toBe(0);
    }
  });

  it("refuses a tool whose manifest changed after it was pinned, until an operator re-approves it", async () => {
    const [listing] = (await h.admin.tools()).filter((t) => t.name === "file-list");
    expect(listing).toBeDefined();
    // Pin a manifest that differs from what the service hosts (as if the tool changed under us).
    const hosted = (await h.admin.tools()).find((t) => t.name === "file-list");
    await h.admin.toolRegister({ manifest: { name: "file-list", version: "9.9.9", description: "changed", input: { type: "object" }, effect: "read", service: "tools" }, approve: true });
    await send("worker", { tag: "list" });
    await until(() => outcomes.has("list"), "the refused list");
    expect(outcomes.get("list")).toMatchObject({ error: ErrorCode.Conflict });
    outcomes.delete("list");

    const offered = await h.admin.toolRegister({ service: "tools" });
    expect(offered.tools.find((t) => t.name === "file-list")?.status).toBe("changed-refused");
    const approved = await h.admin.toolRegister({ service: "tools", approve: true });
    expect(approved.tools.find((t) => t.name === "file-list")).toMatchObject({ status: "re-approved", hash: hosted?.hash });
    await send("worker", { tag: "list" });
    await until(() => outcomes.has("list"), "the list after re-approval");
    expect(outcomes.get("list")).toMatchObject({ result: { entries: expect.any(Array) as unknown } });
  });

  it("injects a secret into an approved destructive call: the tool acts, the agent never sees the password", async () => {
    await send("worker", { tag: "drop" });
    await eventually(async () => (await h.admin.approvals()).some((a) => a.to === "db-drop"), "the held drop");
    const held = (await h.admin.approvals()).find((a) => a.to === "db-drop");
    const carol = await connectNats({ servers: h.url, creds: new TextEncoder().encode(carolCreds), name: "carol", inboxPrefix: subjects.inboxPrefix("carol") });
    connections.push(carol);
    await new SyscallClient(carol, "carol").call(SyscallOp.Approve, { id: syscallId(`t-${newScope()}`, 0), body: { approval: held?.id, digest: held?.digest, verdict: "approve" } });
    await until(() => outcomes.has("drop"), "the approved drop");
    expect(outcomes.get("drop")).toEqual({ dropped: "orders", rows: expect.any(Number) as unknown });
    expect(existsSync(join(h.dir, "db", "orders.json"))).toBe(false);
    expect(JSON.stringify(await events())).not.toContain(DB_PASSWORD);
  });
});
