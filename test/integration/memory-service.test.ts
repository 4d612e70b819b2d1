/**
 * The memory service on a real nats-server (its own credential, which may only answer), with a
 * real LMDB store and real key files, called the way the kernel calls it: msgpack ServiceCalls on
 * mx.svc.memory.<op>, sent with the kernel's credential, writes sealed as the kernel logs them.
 * Then the daemon itself (dist/services/memory/main.js) behind a real kernel: it reads the log
 * through the kernel, says `memory ready`, answers, and stops cleanly on SIGTERM.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { registerMemoryCommand } from "../../src/cli/commands/memory.js";
import { ErrorCode, MaxwellError, decodeMap, encode, serviceSubjects, subjects, type ServiceCall, type ServiceReply } from "../../src/protocol/mod.js";
import { spawnService, startEmbedded, type EmbeddedServer } from "../../src/runtime/deployment.js";
import { createLogger } from "../../src/runtime/logger.js";
import { connectNats, requestRaw, type NatsConnection } from "../../src/transport/connection.js";
import {
  CallClock,
  EXPORT_PAGE_BYTES,
  MemoryService,
  NamespaceKeys,
  openMemoryResult,
  openMemoryStore,
  parseMemoryArgs,
  sealMemoryArgs,
  serveMemory,
  type HitView,
  type MemoryServer,
  type MemoryStore,
  type RecordView,
} from "../../services/memory/mod.js";
import { startHarness, type Harness } from "../support/harness.js";

const T0 = 1_767_225_600_000;
const quiet = createLogger("memory-test", process.env["MAXWELL_TEST_LOG"] ?? "silent");

/** The kernel's side of the wire: sealed writes, calls with the kernel credential. */
class FakeKernel {
  private seq = 100;
  constructor(
    private readonly nc: NatsConnection,
    readonly keys: NamespaceKeys,
  ) {}

  /** A ServiceCall as the kernel builds it from the effect.started event it logged. */
  callOf(op: string, target: string, args: unknown, over: Partial<ServiceCall> = {}): ServiceCall {
    const seq = over.seq ?? ++this.seq;
    // Writes are parsed and sealed before they are logged; reads go as given (the service checks them too).
    const logged = op === "put" || op === "append" || op === "delete" || op === "erase" ? sealMemoryArgs(this.keys, op, target, parseMemoryArgs(op, args)) : args;
    return {
      effect: `01JSVC${String(seq).padStart(20, "0")}` as ServiceCall["effect"],
      seq,
      at: T0 + seq,
      op,
      actor: "worker-1",
      principal: "alice",
      trace: "0af7651916cd43dd8448eb211c80319c" as ServiceCall["trace"],
      target,
      args: logged,
      labels: [],
      deadline: Date.now() + 15_000,
      ...over,
    };
  }

  async send(op: string, payload: Uint8Array): Promise<ServiceReply> {
    return decodeMap(await requestRaw(this.nc, serviceSubjects.call("memory", op), payload, { timeoutMs: 10_000 })) as unknown as ServiceReply;
  }

  call(op: string, target: string, args: unknown, over: Partial<ServiceCall> = {}): Promise<ServiceReply> {
    return this.send(op, encode(this.callOf(op, target, args, over)));
  }

  /** A call that must succeed; its result as the agent would get it (opened). */
  async ok<T>(op: string, target: string, args: unknown, over: Partial<ServiceCall> = {}): Promise<{ result: T; labels: string[] }> {
    const reply = await this.call(op, target, args, over);
    if (!reply.ok) throw MaxwellError.fromWire(reply.error);
    return { result: openMemoryResult(this.keys, op, reply.result) as T, labels: reply.labels ?? [] };
  }

  async refused(op: string, target: string, args: unknown, over: Partial<ServiceCall> = {}): Promise<{ code: string; message: string }> {
    const reply = await this.call(op, target, args, over);
    if (reply.ok) throw new Error(`expected ${op} to be refused, got ${JSON.stringify(reply.result)}`);
    return reply.error;
  }

  admin<T>(body: Record<string, unknown>): Promise<{ result: T; labels: string[] }> {
    return this.ok<T>("admin", "", body, { actor: "admin", principal: "admin" });
  }
}

describe("memory service", () => {
  let dir: string;
  let embedded: EmbeddedServer;
  let serviceNc: NatsConnection;
  let kernelNc: NatsConnection;
  let store: MemoryStore;
  let server: MemoryServer;
  let kernel: FakeKernel;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-memory-svc-"));
    embedded = await startEmbedded({ dataDir: dir });
    const layout = embedded.layout;
    serviceNc = await connectNats({
      servers: embedded.server.url,
      creds: layout.credsOf(serviceSubjects.identity("memory")),
      name: "memory-under-test",
      inboxPrefix: subjects.inboxPrefix(serviceSubjects.identity("memory")),
      reconnect: false,
    });
    const clock = new CallClock();
    store = openMemoryStore({ path: join(dir, "memory"), now: clock.now, noSync: true });
    const service = new MemoryService({ store, keys: NamespaceKeys.forDataDir(dir), clock, log: quiet });
    server = serveMemory(serviceNc, service, quiet);
    server.release();
    await serviceNc.flush();
    kernelNc = await connectNats({ servers: embedded.server.url, creds: layout.credsOf("kernel"), name: "fake-kernel", reconnect: false });
    kernel = new FakeKernel(kernelNc, NamespaceKeys.forDataDir(dir));
  });

  afterAll(async () => {
    await server?.drain();
    await serviceNc?.close();
    await kernelNc?.close();
    await store?.close();
    await embedded?.server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers a put, then a get with the record's provenance and labels", async () => {
    const call = kernel.callOf("put", "agent:worker-1", { key: "plan", value: { step: 1 }, tags: ["todo"], labels: ["conf:internal"] }, { labels: ["untrusted"] });
    const put = await kernel.send("put", encode(call));
    expect(put).toEqual({ ok: true, result: { namespace: "agent:worker-1", key: "plan", version: 1, at: call.at } });
    const got = await kernel.ok<{ record: RecordView }>("get", "agent:worker-1", { key: "plan" }, { labels: [] });
    expect(got.result.record).toMatchObject({
      key: "plan",
      version: 1,
      value: { step: 1 },
      tags: ["todo"],
      provenance: { writer: "worker-1", principal: "alice", causedBy: call.effect, labels: ["conf:internal", "untrusted"] },
    });
    // The poisoned record keeps the reader marked: the answer's labels are the records' labels.
    expect(got.labels).toEqual(["conf:internal", "untrusted"]);
  });

  it("seals record contents in read answers (the kernel logs them) and nothing else", async () => {
    await kernel.ok("put", "agent:sealed", { key: "secret", value: "the launch code is 0000" });
    const raw = await kernel.call("get", "agent:sealed", { key: "secret" });
    expect(raw.ok).toBe(true);
    const text = JSON.stringify(raw);
    expect(text).not.toContain("launch code");
    expect((raw as { result: { record: RecordView } }).result.record).toMatchObject({ key: "secret", sealed: { key: expect.stringMatching(/^[0-9a-f]{32}$/) } });
  });

  it("searches only the namespaces named, and joins the labels of the hits", async () => {
    await kernel.ok("append", "shared:team", { value: "lmdb page reuse explained" }, { labels: ["untrusted"] });
    await kernel.ok("append", "shared:team", { value: "nats subjects and lmdb" });
    await kernel.ok("append", "agent:other", { value: "lmdb secrets of another agent" });
    const one = await kernel.ok<{ hits: HitView[] }>("search", "shared:team", { mode: "text", query: "lmdb", k: 10 });
    expect(one.result.hits.map((h) => h.record.namespace)).toEqual(["shared:team", "shared:team"]);
    expect(one.result.hits.map((h) => h.record.value).sort()).toEqual(["lmdb page reuse explained", "nats subjects and lmdb"]);
    expect(one.labels).toEqual(["untrusted"]);
    const both = await kernel.ok<{ hits: HitView[] }>("search", "shared:team", { mode: "text", query: "lmdb", k: 10, namespaces: ["shared:team", "agent:other"] });
    expect(both.result.hits).toHaveLength(3);
  });

  it("answers a stale compare-and-set with conflict and keeps the newer value", async () => {
    await kernel.ok("put", "agent:cas", { key: "k", value: "v1" });
    await kernel.ok("put", "agent:cas", { key: "k", value: "v2", expectedVersion: 1 });
    const e = await kernel.refused("put", "agent:cas", { key: "k", value: "v3", expectedVersion: 1 });
    expect(e.code).toBe(ErrorCode.Conflict);
    expect(e.message).toMatch(/expected version 1, but it is at version 2/);
    expect((await kernel.ok<{ record: RecordView }>("get", "agent:cas", { key: "k" })).result.record.value).toBe("v2");
  });

  it("judges TTL by the call's time (the kernel's clock), not the service's", async () => {
    await kernel.ok("put", "agent:ttl", { key: "k", value: "brief", ttlMs: 1000 }, { at: T0 });
    expect((await kernel.ok<{ record: RecordView | null }>("get", "agent:ttl", { key: "k" }, { at: T0 + 999 })).result.record?.value).toBe("brief");
    expect((await kernel.ok<{ record: RecordView | null }>("get", "agent:ttl", { key: "k" }, { at: T0 + 1000 })).result.record).toBeNull();
    // Long past wall-clock expiry, a call dated before it still sees the record.
    expect((await kernel.ok<{ record: RecordView | null }>("get", "agent:ttl", { key: "k" }, { at: T0 + 10 })).result.record?.value).toBe("brief");
  });

  it("applies a repeated call once and answers it with the same outcome", async () => {
    const call = encode(kernel.callOf("append", "agent:once", { value: "only once" }));
    const first = await kernel.send("append", call);
    const again = await kernel.send("append", call);
    expect(first.ok).toBe(true);
    expect(again).toEqual(first);
    expect((await kernel.ok<{ records: RecordView[] }>("range", "agent:once", {})).result.records).toHaveLength(1);
  });

  it("erases a namespace: nothing is readable, and what was logged sealed no longer opens", async () => {
    const loggedPut = kernel.callOf("put", "principal:carol", { key: "card", value: "4111 1111" });
    expect((await kernel.send("put", encode(loggedPut))).ok).toBe(true);
    await kernel.ok("append", "principal:carol", { value: "carol's diary" });
    // The kernel destroys the key, logs the erase, then calls the service.
    expect(kernel.keys.erase("principal:carol")).toBe(true);
    const erased = await kernel.ok<{ erased: number }>("erase", "principal:carol", {});
    expect(erased.result).toEqual({ erased: 2 });
    expect((await kernel.ok<{ record: RecordView | null }>("get", "principal:carol", { key: "card" })).result.record).toBeNull();
    expect((await kernel.ok<{ records: RecordView[] }>("range", "principal:carol", {})).result.records).toEqual([]);
    const sealed = (loggedPut.args as { sealed: { sealed: string; key: string } }).sealed;
    expect(() => NamespaceKeys.forDataDir(dir).open("principal:carol", sealed)).toThrow(/erased/);
  });

  it.each([
    ["a key with a path separator", "get", "agent:x", { key: "a/b" }, /path separators/],
    ["a key with a wildcard", "get", "agent:x", { key: "*" }, /wildcards/],
    ["a namespace with a path separator", "get", "agent:../x", { key: "k" }, /path separators/],
    ["a search with k = 0", "search", "agent:x", { mode: "text", query: "q", k: 0 }, /k 0/],
    ["a search with k = 10^9", "search", "agent:x", { mode: "text", query: "q", k: 1e9 }, /k 1000000000/],
    ["a query vector with NaN", "search", "agent:x", { mode: "vector", vector: [Number.NaN], k: 3 }, /finite/],
  ])("refuses a read with %s, and keeps serving", async (_what, op, target, args, message) => {
    const e = await kernel.refused(op, target, args);
    expect(e.code).toBe(ErrorCode.BadRequest);
    expect(e.message).toMatch(message);
    expect((await kernel.ok<{ records: RecordView[] }>("list", "agent:x", {})).result.records).toEqual([]);
  });

  it("refuses a vector of the wrong dimension for the namespace", async () => {
    await kernel.ok("put", "shared:vec", { key: "a", value: 1, vector: [1, 0, 0] });
    const e = await kernel.refused("append", "shared:vec", { value: 2, vector: [1, 0] });
    expect(e.code).toBe(ErrorCode.BadRequest);
    expect(e.message).toMatch(/dimension 2; namespace shared:vec holds vectors of dimension 3/);
    const q = await kernel.refused("search", "shared:vec", { mode: "vector", vector: [1, 0], k: 3 });
    expect(q.message).toMatch(/dimension/);
  });

  it("answers malformed calls with an error instead of failing", async () => {
    const garbage = await kernel.send("get", new Uint8Array([0xc1, 0x00]));
    expect(garbage).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest } });
    const noEffect = await kernel.send("get", encode({ seq: 1, at: T0, target: "agent:x", actor: "a", principal: "p", args: { key: "k" } }));
    expect(noEffect).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest, message: expect.stringMatching(/effect id/) } });
    const unknown = await kernel.send("drop", encode(kernel.callOf("admin", "agent:x", {}, { op: "drop" })));
    expect(unknown).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest, message: expect.stringMatching(/unknown memory operation "drop"/) } });
    // A write whose sealed value was tampered with is refused and recorded as such.
    const call = kernel.callOf("put", "agent:tamper", { key: "k", value: "v" });
    const args = call.args as { sealed: { sealed: string } };
    args.sealed.sealed = Buffer.from("not what was sealed").toString("base64");
    expect(await kernel.send("put", encode(call))).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest } });
  });

  it("refuses an answer too large for one message, with a hint", async () => {
    const big = "x".repeat(60 * 1024);
    for (let i = 0; i < 20; i++) await kernel.ok("append", "agent:big", { value: `${i} ${big}` });
    const e = await kernel.refused("range", "agent:big", { limit: 20 });
    expect(e.message).toMatch(/over the 1048576-byte message limit: ask for fewer records/);
    expect((await kernel.ok<{ records: RecordView[] }>("range", "agent:big", { limit: 5 })).result.records).toHaveLength(5);
  });

  describe("operator requests", () => {
    it("lists namespaces with their record counts", async () => {
      const { result } = await kernel.admin<{ namespaces: { namespace: string; kv: number; episodes: number; revision: number }[]; appliedSeq: number }>({ op: "ls" });
      const team = result.namespaces.find((n) => n.namespace === "shared:team");
      expect(team).toMatchObject({ kv: 0, episodes: 2, revision: 2 });
      expect(result.namespaces.find((n) => n.namespace === "principal:carol")).toMatchObject({ kv: 0, episodes: 0 });
      expect(result.appliedSeq).toBeGreaterThan(100);
    });

    it("gets and searches in the clear", async () => {
      const got = await kernel.admin<{ record: RecordView }>({ op: "get", namespace: "agent:worker-1", key: "plan" });
      expect(got.result.record).toMatchObject({ value: { step: 1 } });
      expect(got.result.record.sealed).toBeUndefined();
      const found = await kernel.admin<{ hits: HitView[] }>({ op: "search", namespace: "shared:team", query: "page reuse" });
      expect(found.result.hits[0]?.record.value).toBe("lmdb page reuse explained");
      const missing = await kernel.admin<{ record: RecordView | null }>({ op: "get", namespace: "agent:worker-1", key: "nothing" });
      expect(missing.result.record).toBeNull();
    });

    it("exports a namespace in pages that fit a message, and checks an import without writing it", async () => {
      const lines: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page: { result: { lines: string[]; next?: string } } = await kernel.admin({ op: "export", namespace: "agent:big", ...(cursor ? { cursor } : {}) });
        expect(page.result.lines.join("").length).toBeLessThanOrEqual(EXPORT_PAGE_BYTES + 70 * 1024);
        lines.push(...page.result.lines);
        cursor = page.result.next;
        pages++;
      } while (cursor !== undefined);
      expect(pages).toBeGreaterThan(2);
      expect(lines).toHaveLength(21);
      expect(JSON.parse(lines[0] as string)).toMatchObject({ format: "maxwell.memory", namespace: "agent:big", revision: 20 });
      const team = (await kernel.admin<{ lines: string[] }>({ op: "export", namespace: "shared:team" })).result.lines;
      const check = await kernel.admin<{ namespace: string; records: number }>({ op: "import-check", lines: team.join(""), namespace: "shared:copy" });
      expect(check.result).toEqual({ namespace: "shared:copy", records: 2, revision: 2 });
      const ls = await kernel.admin<{ namespaces: { namespace: string }[] }>({ op: "ls" });
      expect(ls.result.namespaces.map((n) => n.namespace)).not.toContain("shared:copy");
      const bad = await kernel.call("admin", "", { op: "import-check", lines: `${lines[0]}{"kind":"kv","key":"a/b"}\n` }, { actor: "admin", principal: "admin" });
      expect(bad).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest, message: expect.stringMatching(/import line 2: .*path separators/) } });
    });

    it("reports the state digest and the last applied sequence", async () => {
      const a = await kernel.admin<{ digest: string; appliedSeq: number; at: number }>({ op: "digest", at: T0 + 5000 });
      const b = await kernel.admin<{ digest: string }>({ op: "digest", at: T0 + 5000 });
      expect(a.result.digest).toMatch(/^[0-9a-f]{64}$/);
      expect(b.result.digest).toBe(a.result.digest);
      await kernel.ok("append", "agent:digest", { value: "changes the state" });
      const c = await kernel.admin<{ digest: string; appliedSeq: number }>({ op: "digest", at: T0 + 5000 });
      expect(c.result.digest).not.toBe(a.result.digest);
      expect(c.result.appliedSeq).toBeGreaterThan(a.result.appliedSeq);
    });

    it("refuses an unknown admin request", async () => {
      const reply = await kernel.call("admin", "", { op: "format-disk" }, { actor: "admin", principal: "admin" });
      expect(reply).toMatchObject({ ok: false, error: { code: ErrorCode.BadRequest, message: expect.stringMatching(/unknown op "format-disk"/) } });
    });
  });
});

describe("memory daemon", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it("catches up with the log through the kernel, says it is ready, answers, and stops on SIGTERM", async () => {
    const logLines: string[] = [];
    const daemon = spawnService("memory", ["--data", h.dir, "--nats", h.url], { onLog: (line) => logLines.push(line) });
    await daemon.ready;
    expect(logLines.some((l) => l.includes("memory store caught up with the log"))).toBe(true);
    const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "fake-kernel", reconnect: false });
    try {
      const kernel = new FakeKernel(nc, NamespaceKeys.forDataDir(h.dir));
      // Sequences far above the log's: this store has read the log to its end.
      await kernel.ok("put", "agent:daemon", { key: "k", value: "kept" }, { seq: 10_000 });
      expect((await kernel.ok<{ record: RecordView }>("get", "agent:daemon", { key: "k" })).result.record.value).toBe("kept");
      const digest = await kernel.admin<{ appliedSeq: number; resumeSeq: number }>({ op: "digest" });
      expect(digest.result.appliedSeq).toBe(10_000);
      expect(digest.result.resumeSeq).toBeGreaterThan(0);
    } finally {
      await nc.close();
    }
    daemon.child.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);

    // Started again on the same store, it keeps what it had.
    const again = spawnService("memory", ["--data", h.dir, "--nats", h.url]);
    await again.ready;
    const nc2 = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "fake-kernel", reconnect: false });
    try {
      const kernel = new FakeKernel(nc2, NamespaceKeys.forDataDir(h.dir));
      expect((await kernel.ok<{ record: RecordView }>("get", "agent:daemon", { key: "k" })).result.record.value).toBe("kept");
    } finally {
      await nc2.close();
    }
    again.child.kill("SIGTERM");
    expect(await again.exited).toBe(0);
  });

  it("serves `maxwell memory` through the kernel: ls, get, search, export, digest", async () => {
    const daemon = spawnService("memory", ["--data", h.dir, "--nats", h.url]);
    await daemon.ready;
    const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "fake-kernel", reconnect: false });
    const run = async (...args: string[]): Promise<string> => {
      const program = new Command().exitOverride();
      registerMemoryCommand(program, () => ({ data: h.dir, nats: h.url }));
      let out = "";
      const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
        out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
        return true;
      });
      try {
        await program.parseAsync(["node", "maxwell", "memory", ...args]);
      } finally {
        write.mockRestore();
      }
      return out;
    };
    try {
      const kernel = new FakeKernel(nc, NamespaceKeys.forDataDir(h.dir));
      await kernel.ok("put", "shared:cli", { key: "runbook", value: { text: "restart the lmdb reader" }, tags: ["ops"] }, { seq: 20_001, labels: ["untrusted"] });
      await kernel.ok("append", "shared:cli", { value: "the reader was restarted" }, { seq: 20_002 });
      expect(await run("ls")).toMatch(/shared:cli\s+1 kv\s+1 episodes\s+revision 2/);
      const got = await run("get", "shared:cli", "runbook");
      expect(got).toMatch(/written by worker-1 for alice .* labels untrusted/);
      expect(got).toContain("restart the lmdb reader");
      expect(JSON.parse(await run("get", "shared:cli", "runbook", "--json"))).toMatchObject({ version: 1, value: { text: "restart the lmdb reader" } });
      const found = await run("search", "shared:cli", "restarted reader", "--k", "5");
      const hits = found.split("\n").filter((l) => /^\s*\d+\.\d{3} {2}/.test(l));
      expect(hits).toHaveLength(2);
      expect(hits[0]).toContain("the reader was restarted");
      const exported = (await run("export", "shared:cli")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(exported.map((l) => l["key"] ?? l["format"])).toEqual(["maxwell.memory", expect.stringMatching(/^\d{15}-\d{16}$/), "runbook"]);
      expect(await run("digest", "--at", String(T0))).toMatch(/^[0-9a-f]{64} {2}at 1767225600000 .*applied up to #20002/);
    } finally {
      await nc.close();
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  });

  it("prints its usage with --help and refuses to start without a NATS URL", async () => {
    const help = spawnService("memory", ["--help"]);
    expect(await help.exited).toBe(0);
    const missing = spawnService("memory", ["--data", h.dir], { env: { MAXWELL_NATS_URL: "" } });
    expect(await missing.exited).toBe(2);
  });
});
