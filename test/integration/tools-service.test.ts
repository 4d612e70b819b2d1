/**
 * The tool service over a real nats-server, called the way the kernel calls it: a msgpack
 * `ServiceCall` by request on `mx.svc.tools.call`, with the kernel's credential, the service on its
 * own `svc-tools` credential. Each built-in tool's happy path, and the attacks the issue lists:
 * path traversal, absolute paths, a symlink to /etc, a FIFO, a fetch to a host not allowed (also
 * by redirect), a manifest changed after registration, arguments that fail the schema, and a
 * destructive call without the right injected secret. Then the daemon itself: it starts, says
 * ready, answers, and stops on SIGTERM.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decode, encode } from "../../src/protocol/codec.js";
import { newEventId } from "../../src/protocol/ids.js";
import { manifestHash, validateManifest } from "../../src/protocol/manifest.js";
import { ServiceName, ServiceOp, serviceSubjects, type ServiceCall, type ServiceReply, type ToolManifest } from "../../src/protocol/services.js";
import { newTraceId } from "../../src/protocol/trace.js";
import { spawnService, startEmbedded, type EmbeddedServer } from "../../src/runtime/deployment.js";
import { createLogger } from "../../src/runtime/logger.js";
import { serviceEntry } from "../../src/runtime/paths.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { builtinTools, parseToolsConfig } from "../../services/tools/config.js";
import { ToolService } from "../../services/tools/service.js";
import { passwordHash } from "../../services/tools/toy-database.js";
import { errorOf, resultOf } from "../support/service-replies.js";

const PASSWORD = "correct horse battery staple";
const quiet = createLogger("test-tools", process.env["MAXWELL_TEST_LOG"] ?? "silent");
const callSubject = serviceSubjects.call(ServiceName.Tools, ServiceOp.Call);
const manifestsSubject = serviceSubjects.call(ServiceName.Tools, ServiceOp.Manifests);

const dir = mkdtempSync(join(tmpdir(), "maxwell-tools-"));
let embedded: EmbeddedServer;
let kernel: NatsConnection;

/** A local web server: what http-fetch may and may not reach. */
let web: Server;
let webPort = 0;
const webHits: string[] = [];

beforeAll(async () => {
  embedded = await startEmbedded({ dataDir: dir });
  kernel = await connectNats({ servers: embedded.server.url, creds: embedded.layout.credsOf("kernel"), name: "test-kernel", reconnect: false });
  web = createServer((req: IncomingMessage, res: ServerResponse) => {
    webHits.push(`${req.method ?? "?"} ${req.headers.host ?? "?"}${req.url ?? ""}`);
    const port = (web.address() as AddressInfo).port;
    if (req.url === "/hello") {
      res.writeHead(200, { "content-type": "text/plain" }).end("hello from the web");
    } else if (req.url === "/echo" && req.method === "POST") {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
      req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ got: body })));
    } else if (req.url === "/redirect-in") {
      res.writeHead(302, { location: "/hello" }).end();
    } else if (req.url === "/redirect-out") {
      res.writeHead(302, { location: `http://localhost:${port}/hello` }).end();
    } else if (req.url === "/big") {
      res.writeHead(200, { "content-type": "text/plain" }).end("x".repeat(100_000));
    } else {
      res.writeHead(404).end("not here");
    }
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  webPort = (web.address() as AddressInfo).port;
});

afterAll(async () => {
  await kernel?.close();
  await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
  await embedded?.server.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function request(subject: string, payload: unknown): Promise<ServiceReply> {
  const m = await kernel.request(subject, encode(payload), { timeout: 15_000 });
  return decode(m.data) as ServiceReply;
}

describe("tool service", () => {
  const pins = new Map<string, string>();
  let service: ToolService;
  const workspace = join(dir, "workspace");

  beforeAll(async () => {
    const config = parseToolsConfig(
      {
        workspace: { maxReadBytes: 64 * 1024 },
        fetch: { allow: ["127.0.0.1"], maxBytes: 4096, timeoutMs: 5000 },
        db: { adminPasswordSha256: passwordHash(PASSWORD) },
      },
      dir,
    );
    service = new ToolService({ servers: embedded.server.url, creds: embedded.layout.credsOf(serviceSubjects.identity(ServiceName.Tools)), tools: await builtinTools(config), log: quiet });
    await service.start();
    writeFileSync(join(workspace, "notes.txt"), "remember the milk\n");
    symlinkSync("/etc", join(workspace, "etc-link"));
    symlinkSync("/etc/passwd", join(workspace, "passwd-link"));
    execFileSync("mkfifo", [join(workspace, "pipe")]);
    // Pin what the service hosts, as the kernel does at registration.
    for (const m of resultOf<ToolManifest[]>(await request(manifestsSubject, {}))) pins.set(m.name, manifestHash(m));
  });
  afterAll(async () => {
    await service?.stop();
  });

  function call(target: string, args: unknown, extra: Partial<ServiceCall> = {}): Promise<ServiceReply> {
    const c: ServiceCall = {
      effect: newEventId(),
      seq: 1,
      at: Date.now(),
      op: ServiceOp.Call,
      actor: "worker",
      principal: "alice",
      trace: newTraceId(),
      target,
      args,
      labels: [],
      deadline: Date.now() + 10_000,
      ...(pins.has(target) ? { manifest: pins.get(target) as string } : {}),
      ...extra,
    };
    return request(callSubject, c);
  }

  it("answers 'manifests' with every built-in tool's valid manifest and its effect class", async () => {
    const manifests = resultOf<ToolManifest[]>(await request(manifestsSubject, {}));
    expect(manifests.map((m) => [m.name, m.effect])).toEqual([
      ["db-drop", "destructive"],
      ["db-query", "read"],
      ["file-list", "read"],
      ["file-read", "read"],
      ["file-write", "write"],
      ["http-fetch", "external"],
    ]);
    for (const m of manifests) {
      expect(m.service).toBe("tools");
      // How the kernel pins at registration: it records the service it listed the manifest from.
      expect(manifestHash(validateManifest({ service: "tools", ...m }))).toBe(pins.get(m.name));
    }
    expect(manifests.find((m) => m.name === "db-drop")?.secrets).toEqual({ password: "db-admin" });
  });

  describe("file tools", () => {
    it("write, read back and list a file in the workspace", async () => {
      expect(resultOf(await call("file-write", { path: "out/report.md", content: "# Report\n", createDirs: true }))).toEqual({ path: "out/report.md", size: 9, created: true });
      expect(resultOf(await call("file-read", { path: "out/report.md" }))).toEqual({ path: "out/report.md", size: 9, encoding: "utf8", content: "# Report\n", truncated: false });
      expect(resultOf(await call("file-read", { path: "notes.txt", encoding: "base64" }))).toMatchObject({ content: Buffer.from("remember the milk\n").toString("base64") });
      const listed = resultOf<{ entries: { name: string; type: string }[] }>(await call("file-list", {}));
      expect(listed.entries).toEqual(
        expect.arrayContaining([
          { name: "notes.txt", type: "file", size: 18 },
          { name: "out", type: "dir" },
          { name: "etc-link", type: "symlink" },
          { name: "pipe", type: "other" },
        ]),
      );
    });

    it.each([
      ["a path traversal", { path: "../tools.json" }, /contains '\.\.'/],
      ["a deeper path traversal", { path: "out/../../../../etc/passwd" }, /contains '\.\.'/],
      ["an absolute path", { path: "/etc/passwd" }, /is absolute/],
      ["a symlink to /etc", { path: "etc-link/passwd" }, /symlink that resolves outside the workspace/],
      ["a symlink to /etc/passwd", { path: "passwd-link" }, /symlink that resolves outside the workspace/],
      ["a FIFO", { path: "pipe" }, /not a regular file/],
    ])("refuse to read %s with forbidden", async (_what, args, message) => {
      const reply = await call("file-read", args);
      const e = errorOf(reply);
      expect(e.code).toBe("forbidden");
      expect(e.message).toMatch(message);
      expect(JSON.stringify(reply)).not.toMatch(/root:x:0:0/);
    });

    it("refuses to list /etc through a symlink, and to write through one", async () => {
      expect(errorOf(await call("file-list", { path: "etc-link" })).code).toBe("forbidden");
      expect(errorOf(await call("file-write", { path: "etc-link/evil", content: "x" })).code).toBe("forbidden");
      expect(errorOf(await call("file-write", { path: "/tmp/evil", content: "x" })).code).toBe("forbidden");
      expect(existsSync("/etc/evil")).toBe(false);
    });

    it("refuses a write over the size limit", async () => {
      const e = errorOf(await call("file-write", { path: "huge.txt", content: "x".repeat(300 * 1024) }));
      expect(e).toMatchObject({ code: "bad_request" });
      expect(e.message).toMatch(/at most 262144 bytes/);
      expect(existsSync(join(workspace, "huge.txt"))).toBe(false);
    });
  });

  describe("http-fetch", () => {
    it("fetches from an allowed host and labels the result untrusted", async () => {
      const reply = await call("http-fetch", { url: `http://127.0.0.1:${webPort}/hello` });
      expect(reply).toEqual({
        ok: true,
        result: { url: `http://127.0.0.1:${webPort}/hello`, status: 200, headers: { "content-type": "text/plain" }, body: "hello from the web", truncated: false },
        labels: ["untrusted"],
      });
    });

    it("posts a body", async () => {
      const result = resultOf<{ body: string }>(await call("http-fetch", { url: `http://127.0.0.1:${webPort}/echo`, method: "POST", body: "ping", headers: { "content-type": "text/plain" } }));
      expect(JSON.parse(result.body)).toEqual({ got: "ping" });
    });

    it("refuses a host that is not on the allowlist, without connecting to it", async () => {
      const before = webHits.length;
      const e = errorOf(await call("http-fetch", { url: `http://localhost:${webPort}/hello` }));
      expect(e.code).toBe("forbidden");
      expect(e.message).toMatch(/host localhost is not on this tool service's fetch allowlist/);
      expect(webHits.length).toBe(before);
    });

    it("follows a redirect to an allowed host and refuses one to a host not allowed", async () => {
      expect(resultOf<{ body: string; url: string }>(await call("http-fetch", { url: `http://127.0.0.1:${webPort}/redirect-in` }))).toMatchObject({ body: "hello from the web", url: `http://127.0.0.1:${webPort}/hello` });
      const before = webHits.length;
      const e = errorOf(await call("http-fetch", { url: `http://127.0.0.1:${webPort}/redirect-out` }));
      expect(e.code).toBe("forbidden");
      expect(e.message).toMatch(/host localhost is not on/);
      expect(webHits.slice(before)).toEqual([`GET 127.0.0.1:${webPort}/redirect-out`]);
    });

    it("cuts a large response at the limit", async () => {
      const result = resultOf<{ body: string; truncated: boolean }>(await call("http-fetch", { url: `http://127.0.0.1:${webPort}/big` }));
      expect(result.body.length).toBe(4096);
      expect(result.truncated).toBe(true);
    });

    it("refuses a header that would change where the request goes", async () => {
      expect(errorOf(await call("http-fetch", { url: `http://127.0.0.1:${webPort}/hello`, headers: { Host: "localhost" } })).message).toMatch(/header 'Host' may not be set/);
    });
  });

  describe("pinning and arguments", () => {
    it("refuses a call pinned to a manifest that differs from the hosted one, with conflict", async () => {
      const hosted = resultOf<ToolManifest[]>(await request(manifestsSubject, {})).find((m) => m.name === "file-write") as ToolManifest;
      const registered = { ...hosted, effect: "read" as const };
      const e = errorOf(await call("file-write", { path: "pinned.txt", content: "x" }, { manifest: manifestHash(registered) }));
      expect(e.code).toBe("conflict");
      expect(e.message).toMatch(/tool 'file-write' is not the tool that was registered/);
      expect(existsSync(join(workspace, "pinned.txt"))).toBe(false);
    });

    it.each([
      ["a missing required argument", "file-read", {}, /args field 'path' is required/],
      ["a wrong type", "file-read", { path: 7 }, /args field 'path' must be string/],
      ["an argument the tool does not take", "file-write", { path: "a", content: "b", mode: "0777" }, /args field 'mode' is not an argument this tool takes/],
      ["a bad enum value", "http-fetch", { url: "http://127.0.0.1/", method: "DELETE" }, /args field 'method' must be equal to one of the allowed values/],
    ])("refuses %s with bad_request", async (_what, tool, args, message) => {
      const e = errorOf(await call(tool, args));
      expect(e.code).toBe("bad_request");
      expect(e.message).toMatch(message);
    });

    it("answers garbage with bad_request and keeps serving", async () => {
      const m = await kernel.request(callSubject, new Uint8Array([0xc1, 0x00, 0xff]), { timeout: 5000 });
      expect(errorOf(decode(m.data) as ServiceReply).code).toBe("bad_request");
      expect(errorOf(await request(serviceSubjects.call(ServiceName.Tools, "explode"), {})).message).toMatch(/unknown tools operation 'explode'/);
      expect(resultOf(await call("file-read", { path: "notes.txt" }))).toMatchObject({ content: "remember the milk\n" });
    });
  });

  describe("demo database", () => {
    it("lists tables and queries rows", async () => {
      expect(resultOf(await call("db-query", {}))).toEqual({ tables: [{ name: "customers", rows: 3 }, { name: "orders", rows: 3 }] });
      const pro = resultOf<{ total: number; rows: { name: string }[] }>(await call("db-query", { table: "customers", where: { plan: "pro" } }));
      expect(pro.total).toBe(2);
      expect(pro.rows.map((r) => r.name)).toEqual(["Ada Lovelace", "Alan Turing"]);
    });

    it("refuses db-drop without the admin password, and with a wrong one; the table stays", async () => {
      const none = errorOf(await call("db-drop", { table: "customers" }));
      expect(none.code).toBe("unauthorized");
      expect(none.message).toMatch(/the call carries none/);
      const wrong = errorOf(await call("db-drop", { table: "customers" }, { secrets: { password: "hunter2" } }));
      expect(wrong.code).toBe("unauthorized");
      expect(wrong.message).toMatch(/the admin password is wrong/);
      expect(resultOf<{ total: number }>(await call("db-query", { table: "customers" })).total).toBe(3);
    });

    it("drops a table with the right injected password", async () => {
      expect(resultOf(await call("db-drop", { table: "orders" }, { secrets: { password: PASSWORD } }))).toEqual({ dropped: "orders", rows: 3 });
      expect(errorOf(await call("db-query", { table: "orders" })).code).toBe("not_found");
    });
  });
});

describe("tool service daemon", () => {
  const exec = promisify(execFile);

  it("prints its usage for --help", async () => {
    const { stdout } = await exec(process.execPath, [serviceEntry("tools"), "--help"]);
    expect(stdout).toMatch(/^usage: maxwell-tools --nats URL/);
  });

  it("starts, says ready, answers 'manifests', and exits 0 on SIGTERM", async () => {
    const data = join(dir, "daemon");
    const logs: string[] = [];
    const daemon = spawnService("tools", ["--data", data, "--nats", embedded.server.url, "--creds", embedded.layout.credsOf("svc-tools")], {
      onLog: (line) => logs.push(line),
      env: { MAXWELL_LOG_LEVEL: "info", MAXWELL_LOG_FORMAT: "json" },
    });
    try {
      await daemon.ready;
      expect(existsSync(join(data, "workspace"))).toBe(true);
      expect(existsSync(join(data, "db", "customers.json"))).toBe(true);
      const manifests = resultOf<ToolManifest[]>(await request(manifestsSubject, {}));
      expect(manifests.map((m) => m.name)).toContain("file-read");
      expect(logs.some((l) => l.includes('"tool service started"'))).toBe(true);
    } finally {
      daemon.child.kill("SIGTERM");
    }
    expect(await daemon.exited).toBe(0);
    // Nobody answers any more.
    await expect(kernel.request(manifestsSubject, encode({}), { timeout: 2000 })).rejects.toThrow(/no responders|503/i);
  });
});
