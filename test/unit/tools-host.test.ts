/**
 * The tool host, the part of a tool service that does not know about NATS: the pinned manifest
 * hash, argument checks, deadlines, idempotency by effect id, injected secrets and labels. Every
 * failure is a typed reply, never a throw.
 */
import { describe, expect, it } from "vitest";
import { newEventId } from "../../src/protocol/ids.js";
import { manifestHash } from "../../src/protocol/manifest.js";
import type { ServiceCall, ToolManifest } from "../../src/protocol/services.js";
import { newTraceId } from "../../src/protocol/trace.js";
import { createLogger } from "../../src/runtime/logger.js";
import { ToolHost } from "../../services/tools/host.js";
import { defineTool, type Tool } from "../../services/tools/tool.js";
import { checkUrl, hostAllowed } from "../../services/tools/http-fetch.js";
import { errorOf } from "../support/service-replies.js";

const log = createLogger("test-tools", "silent");

function counterTool(name: string, idempotent: boolean): { tool: Tool; runs: () => number } {
  let runs = 0;
  const tool = defineTool<{ n: number }>({
    manifest: {
      name,
      version: "1.0.0",
      description: "Counts its runs",
      effect: "write",
      idempotent,
      input: { type: "object", properties: { n: { type: "integer" } }, required: ["n"], additionalProperties: false },
    },
    handler: (args) => ({ n: args.n, run: ++runs }),
  });
  return { tool, runs: () => runs };
}

const slow = defineTool({
  manifest: { name: "slow", version: "1", description: "Waits until aborted", effect: "read", input: { type: "object" } },
  handler: (_args, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(new Error("aborted")))),
});

const secretive = defineTool({
  manifest: { name: "secretive", version: "1", description: "Shows which secrets it got", effect: "read", input: { type: "object" }, secrets: { password: "db-admin" } },
  labels: ["conf:internal"],
  handler: (_args, ctx) => {
    ctx.label("untrusted", "conf:internal");
    return { names: Object.keys(ctx.secrets), password: ctx.secrets["password"] ?? null };
  },
});

const liar = defineTool({
  manifest: { name: "liar", version: "1", description: "Breaks its output schema", effect: "read", input: { type: "object" }, output: { type: "object", required: ["size"] } },
  handler: () => ({ nope: true }),
});

const crasher = defineTool({
  manifest: { name: "crasher", version: "1", description: "Throws a plain Error", effect: "read", input: { type: "object" } },
  handler: () => {
    throw new TypeError("cannot read properties of undefined");
  },
});

function callOf(m: ToolManifest, args: unknown, extra: Partial<ServiceCall> = {}): ServiceCall {
  return {
    effect: newEventId(),
    seq: 1,
    at: Date.now(),
    op: "call",
    actor: "worker",
    principal: "alice",
    trace: newTraceId(),
    target: m.name,
    args,
    labels: [],
    deadline: Date.now() + 10_000,
    manifest: manifestHash(m),
    ...extra,
  };
}

describe("tool host", () => {
  const once = counterTool("once", false);
  const idem = counterTool("idem", true);
  const host = new ToolHost({ tools: [once.tool, idem.tool, slow, secretive, liar, crasher], log, maxRunMs: 5_000 });

  it("lists its manifests, sorted by name", async () => {
    const reply = await host.handle("manifests", {});
    expect(reply.ok && (reply.result as ToolManifest[]).map((m) => m.name)).toEqual(["crasher", "idem", "liar", "once", "secretive", "slow"]);
  });

  it("runs a call whose pinned hash is the hosted manifest's", async () => {
    expect(await host.call(callOf(once.tool.manifest, { n: 7 }))).toEqual({ ok: true, result: { n: 7, run: 1 } });
  });

  it("refuses a call pinned to another manifest with conflict, without running the tool", async () => {
    const before = once.runs();
    const changed = { ...once.tool.manifest, description: "Counts its runs (and now does more)" };
    const e = errorOf(await host.call(callOf(once.tool.manifest, { n: 1 }, { manifest: manifestHash(changed) })));
    expect(e.code).toBe("conflict");
    expect(e.message).toMatch(/tool 'once' is not the tool that was registered.*register the tool again/);
    expect(once.runs()).toBe(before);
  });

  it("refuses a call with no pinned hash", async () => {
    const { manifest: _none, ...unpinned } = callOf(once.tool.manifest, { n: 1 });
    expect(errorOf(await host.call(unpinned)).message).toMatch(/carries no pinned manifest hash/);
  });

  it("refuses arguments that fail the input schema with bad_request naming the field", async () => {
    const before = once.runs();
    const e = errorOf(await host.call(callOf(once.tool.manifest, { n: "seven" })));
    expect(e).toMatchObject({ code: "bad_request", message: "tool 'once' args field 'n' must be integer" });
    expect(once.runs()).toBe(before);
  });

  it("answers not_found for a tool it does not host", async () => {
    const e = errorOf(await host.call({ ...callOf(once.tool.manifest, {}), target: "rm-rf" }));
    expect(e.code).toBe("not_found");
    expect(e.message).toMatch(/no tool named 'rm-rf'/);
  });

  it("answers a repeated effect id of an idempotent tool from its cache", async () => {
    const call = callOf(idem.tool.manifest, { n: 1 });
    const first = await host.call(call);
    const again = await host.call({ ...call, at: call.at + 1 });
    expect(again).toEqual(first);
    expect(idem.runs()).toBe(1);
    await host.call(callOf(idem.tool.manifest, { n: 1 }));
    expect(idem.runs()).toBe(2);
  });

  it("runs a repeated effect id of a non-idempotent tool again", async () => {
    const call = callOf(once.tool.manifest, { n: 2 });
    const before = once.runs();
    await host.call(call);
    await host.call(call);
    expect(once.runs()).toBe(before + 2);
  });

  it("answers timeout at the call's deadline and aborts the handler's signal", async () => {
    const e = errorOf(await host.call(callOf(slow.manifest, {}, { deadline: Date.now() + 50 })));
    expect(e.code).toBe("timeout");
    expect(e.message).toMatch(/did not finish within \d+ ms/);
    expect(host.inFlight).toBe(0);
  });

  it("answers timeout for a call that arrives after its deadline", async () => {
    expect(errorOf(await host.call(callOf(slow.manifest, {}, { deadline: Date.now() - 1 }))).message).toMatch(/after its deadline/);
  });

  it("aborts running calls when the service stops, answering unavailable", async () => {
    const pending = host.call(callOf(slow.manifest, {}));
    expect(host.inFlight).toBe(1);
    host.abortAll();
    expect(errorOf(await pending).code).toBe("unavailable");
  });

  it("hands the handler only the secrets its manifest declares, and joins static and added labels", async () => {
    const reply = await host.call(callOf(secretive.manifest, {}, { secrets: { password: "s3cret-pw", github: "not-declared" } }));
    expect(reply).toEqual({ ok: true, result: { names: ["password"], password: "s3cret-pw" }, labels: ["conf:internal", "untrusted"] });
  });

  it("answers internal when a tool breaks its output schema", async () => {
    const e = errorOf(await host.call(callOf(liar.manifest, {})));
    expect(e.code).toBe("internal");
    expect(e.message).toMatch(/result field 'size' is required \(the tool broke its manifest's output schema\)/);
  });

  it("answers internal when a handler throws a plain error", async () => {
    expect(errorOf(await host.call(callOf(crasher.manifest, {})))).toEqual({ code: "internal", message: "cannot read properties of undefined" });
  });

  it.each([
    ["a payload that is not a map", "call", [1, 2], /must be a map/],
    ["a call without an effect id", "call", { target: "once" }, /field 'effect' must be a non-empty string/],
    ["a call with a non-numeric deadline", "call", { effect: "e", actor: "a", principal: "p", trace: "t", target: "once", at: 1, deadline: "soon" }, /field 'deadline' must be a finite number/],
    ["an unknown operation", "delete", {}, /unknown tools operation 'delete'/],
  ])("answers bad_request for %s", async (_what, op, payload, message) => {
    const e = errorOf(await host.handle(op, payload));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(message);
  });

  it("lists and pins a manifest with its service filled in, when it is hosted in a named service", async () => {
    const inService = new ToolHost({ tools: [once.tool], log, service: "tools" });
    const listed = (await inService.handle("manifests", {})) as { ok: true; result: ToolManifest[] };
    const withService = { ...once.tool.manifest, service: "tools" };
    expect(listed.result).toEqual([withService]);
    expect(inService.hashOf("once")).toBe(manifestHash(withService));
    expect(inService.hashOf("once")).not.toBe(manifestHash(once.tool.manifest));
    expect((await inService.call(callOf(withService, { n: 1 }))).ok).toBe(true);
  });

  it("refuses two tools with the same name", () => {
    expect(() => new ToolHost({ tools: [once.tool, once.tool], log })).toThrow(/two tools are named 'once'/);
  });
});

describe("fetch allowlist", () => {
  it.each([
    ["example.com", ["example.com"], true],
    ["EXAMPLE.com.", ["example.com"], true],
    ["api.example.com", ["*.example.com"], true],
    ["a.b.example.com", ["*.example.com"], true],
    ["example.com", ["*.example.com"], false],
    ["evilexample.com", ["*.example.com"], false],
    ["example.com.evil.net", ["example.com"], false],
    ["127.0.0.1", ["127.0.0.1"], true],
    ["localhost", ["127.0.0.1"], false],
  ])("host %s against %j → %s", (host, allow, expected) => {
    expect(hostAllowed(host, allow)).toBe(expected);
  });

  it.each([
    ["file:///etc/passwd", "forbidden", /only http and https/],
    ["ftp://example.com/x", "forbidden", /only http and https/],
    ["http://user:pw@example.com/", "bad_request", /user name or password/],
    ["not a url", "bad_request", /is not a URL/],
    ["http://example.org/", "forbidden", /host example.org is not on this tool service's fetch allowlist/],
  ])("refuses %s", (url, code, message) => {
    let error: { code?: string; message?: string } = {};
    try {
      checkUrl(url, ["example.com"]);
    } catch (err) {
      error = err as { code: string; message: string };
    }
    expect(error.code).toBe(code);
    expect(error.message).toMatch(message);
  });
});
