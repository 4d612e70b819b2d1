/**
 * `maxwell replay fork`: a run recorded by a real daemon (`maxwell up --config`, the offline model
 * behind the real gateway, the real tool service), forked in the middle of the work with changed
 * code for one agent. The sandbox carries on live from the cut with the new code, keeps its hash
 * chain and checkpoints verifiable across the kernel-key handover, holds none of production's
 * keys or secrets, and production's log is left exactly as it was.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, type LogEvent, type StoredEntry } from "../../src/protocol/mod.js";
import { AdminClient } from "../../src/runtime/admin-client.js";
import { spawnService, startEmbedded } from "../../src/runtime/deployment.js";
import { seedSandbox } from "../../src/runtime/fork.js";
import { cliEntry, dataLayout, packageRoot } from "../../src/runtime/paths.js";
import { SecretStore } from "../../src/runtime/secrets.js";
import type { DaemonInfo } from "../../src/runtime/supervisor.js";
import { keyFiles } from "../../src/transport/identity.js";
import { runCli } from "../support/cli.js";
import { eventually } from "../support/harness.js";

const SDK = JSON.stringify(join(packageRoot, "dist", "src", "sdk", "mod.js"));

/** The deployed worker lists the workspace; the fixed one reads the notes instead. */
const worker = (tool: string) => `
import { defineAgent, main } from ${SDK};

const worker = defineAgent({
  async onMessage(msg, ctx) {
    const looked = await ctx.tool(${tool});
    const said = await ctx.llm({ model: "maxwell-offline", max_tokens: 32, messages: [{ role: "user", content: "Summarize job " + msg.body.n }] });
    ctx.log.info({ looked: looked.result, stop: said.message.stop_reason }, "done");
  },
});

export default worker;
await main(worker);
`;

/** The environment without a model key, so the production run uses the offline model too. */
function offlineEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { MAXWELL_LOG_LEVEL: "warn" };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ANTHROPIC_") && k !== "MAXWELL_LOG_LEVEL") env[k] = v;
  return env;
}

type Entry = LogEvent & { subject: string };

describe("maxwell replay fork", () => {
  const root = mkdtempSync(join(tmpdir(), "maxwell-fork-test-"));
  const prod = join(root, "prod");
  const sandbox = join(root, "sandbox");
  const code = join(root, "code");
  let daemon: ChildProcess | undefined;
  let at = 0;
  let m1 = "";
  let m2 = "";
  let before = { lastSeq: 0, head: "" };
  let fork = { code: -1, stdout: "", stderr: "" };

  const cli = (data: string, ...args: string[]) => runCli(["--data", data, ...args]);
  const events = async (data: string, from = 1): Promise<Entry[]> => {
    const r = await cli(data, "log", "--json", "--from", String(from));
    if (r.code !== 0) throw new Error(`maxwell log failed: ${r.stderr}`);
    return r.stdout
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as Entry);
  };
  const verify = async (data: string) => {
    const r = await cli(data, "verify", "--json");
    return { code: r.code, report: JSON.parse(r.stdout) as { ok: boolean; lastSeq: number; head: string; checkpoints: number; checkpointedTo: number; problem?: unknown } };
  };
  const completed = (log: Entry[], cause: string) => log.filter((e) => e.type === EventType.EffectCompleted && e.actor === "worker" && e.causation === cause);

  async function stopDaemon(): Promise<void> {
    if (!daemon || daemon.exitCode !== null) return;
    const exited = new Promise((r) => daemon?.once("exit", r));
    daemon.kill("SIGTERM");
    await exited;
  }

  beforeAll(async () => {
    mkdirSync(join(prod, "workspace"), { recursive: true });
    mkdirSync(code);
    writeFileSync(join(prod, "workspace", "notes.txt"), "remember the milk\n");
    writeFileSync(join(code, "worker.js"), worker(`"file-list", { path: "." }`));
    writeFileSync(join(code, "worker-fixed.js"), worker(`"file-read", { path: "notes.txt" }`));
    writeFileSync(join(code, "broken.js"), "export default 42;\n");
    writeFileSync(join(prod, "maxwell.json"), JSON.stringify({ principals: [{ name: "alice" }], agents: [{ name: "worker", command: ["node", join(code, "worker.js")] }] }));
    // A secret in production's store: the sandbox must not get it.
    SecretStore.forDataDir(prod).set("db-admin", "hunter2-production-only");

    daemon = spawn(process.execPath, [cliEntry(), "--data", prod, "up"], { stdio: ["ignore", "pipe", "pipe"], env: offlineEnv() });
    const d = daemon;
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: d.stdout! }).on("line", (line) => {
        if (line.startsWith("maxwell ready")) resolve();
      });
      d.once("exit", (c) => reject(new Error(`maxwell up exited with ${String(c)}`)));
    });
    const send = async (n: number): Promise<string> => {
      const r = await cli(prod, "send", "--as", "alice", "--to", "worker", "--json", JSON.stringify({ n }));
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { event: string }).event;
    };
    m1 = await send(1);
    await eventually(async () => completed(await events(prod), m1).length === 2, "job 1 to finish", 30_000);
    // A checkpoint signed by production's key, inside the part the fork takes over.
    const info = JSON.parse(readFileSync(join(prod, "run", "daemon.json"), "utf8")) as DaemonInfo;
    const admin = await AdminClient.connect(info.natsUrl, dataLayout(prod).credsOf("admin"));
    await admin.checkpoint();
    await admin.close();
    m2 = await send(2);
    await eventually(async () => completed(await events(prod), m2).length === 2, "job 2 to finish", 30_000);
    await stopDaemon();

    // The cut: job 2 delivered, none of its work done yet.
    at = (await events(prod)).find((e) => e.id === m2)?.seq ?? 0;
    const v = await verify(prod);
    before = { lastSeq: v.report.lastSeq, head: v.report.head };
    fork = await cli(prod, "replay", "fork", "--at", String(at), "--code", join(code, "worker-fixed.js"), "--agent", "worker", "--into", sandbox, "--idle", "2500", "--for", "25000");
  }, 120_000);

  afterAll(async () => {
    await stopDaemon();
    rmSync(root, { recursive: true, force: true });
  });

  it("checks the new code against the log up to the cut, then runs it live from there", async () => {
    expect(fork.code, fork.stderr).toBe(0);
    expect(fork.stdout).toMatch(/check: the new code diverges from the log before #\d+/);
    expect(fork.stdout).toMatch(/tool file-read: |file-read/);
    expect(fork.stdout).toContain(`sandbox ${sandbox}`);
    expect(fork.stdout).toMatch(new RegExp(`in flight at #${at}, delivered again: worker #${at}\\b`));

    const after = await events(sandbox, at + 1);
    const handover = after[0];
    expect(handover?.type).toBe(EventType.Fork);
    const prodKey = readFileSync(keyFiles(join(prod, "keys")).kernelPublic, "utf8").trim();
    const sandboxKey = readFileSync(keyFiles(join(sandbox, "keys")).kernelPublic, "utf8").trim();
    expect(handover).toMatchObject({ seq: at + 1, upTo: at, parentKey: prodKey, kernelKey: sandboxKey, identities: { worker: expect.any(String), alice: expect.any(String) } });

    // Job 2, in flight at the cut, was handled again by the new code: it read the notes.
    const read = after.find((e) => e.type === EventType.EffectStarted && e.actor === "worker" && e.target === "file-read");
    expect(read, fork.stdout).toMatchObject({ causation: m2, args: { path: "notes.txt" } });
    const result = after.find((e) => e.type === EventType.EffectCompleted && e.effect === read?.id);
    expect(JSON.stringify(result)).toContain("remember the milk");
    expect(after.some((e) => e.type === EventType.EffectStarted && e.actor === "worker" && e.target === "file-list")).toBe(false);
    // Job 1 was done at the cut: not handled again.
    expect(after.some((e) => "causation" in e && e.causation === m1)).toBe(false);
    // The model is the offline one.
    expect(after.find((e) => e.type === EventType.EffectCompleted && e.kind === "llm" && e.causation === m2)).toMatchObject({ usage: { model: "maxwell-offline" } });
    // Printed as they were appended.
    expect(fork.stdout).toMatch(/FORK\s+of #1\.\.#\d+/);
    expect(fork.stdout).toMatch(/tool\s+worker → file-read/);
  });

  it("copies production's entries verbatim and leaves production's log as it was", async () => {
    const v = await verify(prod);
    expect(v.code).toBe(0);
    expect({ lastSeq: v.report.lastSeq, head: v.report.head }).toEqual(before);
    const [mine, theirs] = [await events(prod), await events(sandbox)];
    expect(theirs.slice(0, at)).toEqual(mine.slice(0, at));
    expect(mine.some((e) => e.type === EventType.EffectStarted && e.target === "file-read")).toBe(false);
  });

  it("verifies across the key handover: production's checkpoints before the fork, the sandbox's after", async () => {
    const log = await events(sandbox);
    const checkpoints = log.filter((e): e is Entry & { type: "checkpoint"; key: string } => e.type === EventType.Checkpoint);
    const prodKey = readFileSync(keyFiles(join(prod, "keys")).kernelPublic, "utf8").trim();
    const sandboxKey = readFileSync(keyFiles(join(sandbox, "keys")).kernelPublic, "utf8").trim();
    expect(checkpoints.filter((c) => c.seq < at && c.key === prodKey).length).toBeGreaterThanOrEqual(1);
    expect(checkpoints.filter((c) => c.seq > at && c.key === sandboxKey).length).toBeGreaterThanOrEqual(1);
    const v = await verify(sandbox);
    expect(v.report.problem).toBeUndefined();
    expect(v.code).toBe(0);
    expect(v.report.checkpointedTo).toBeGreaterThan(at);
    // Production's key cannot vouch for the sandbox's log.
    const wrong = await cli(sandbox, "verify", "--key", prodKey);
    expect(wrong.code).toBe(3);
    expect(wrong.stdout).toMatch(/FAILED at event #\d+: checkpoint signed by/);
  });

  it("holds keys of its own and none of production's secrets", () => {
    const [p, s] = [keyFiles(join(prod, "keys")), keyFiles(join(sandbox, "keys"))];
    for (const k of ["operator", "system", "account", "kernel"] as const) {
      expect(readFileSync(s[k], "utf8")).not.toBe(readFileSync(p[k], "utf8"));
    }
    expect(readFileSync(join(sandbox, "creds", "worker.creds"), "utf8")).not.toBe(readFileSync(join(prod, "creds", "worker.creds"), "utf8"));
    expect(existsSync(join(prod, "kernel", "secrets.enc"))).toBe(true);
    expect(existsSync(join(sandbox, "kernel", "secrets.enc"))).toBe(false);
    expect(existsSync(join(sandbox, "keys", "secrets.key"))).toBe(false);
    const tools = JSON.parse(readFileSync(join(sandbox, "tools.json"), "utf8")) as { fetch: { allow: string[] }; mcp?: unknown };
    expect(tools.fetch.allow).toEqual([]);
    expect(tools.mcp).toBeUndefined();
    // The sandbox's config names the new code, so 'replay agent' there runs it.
    expect(readFileSync(join(sandbox, "maxwell.json"), "utf8")).toContain("worker-fixed.js");
  });

  it("a kernel without --fork refuses a log another kernel key started", async () => {
    const dir = join(root, "refused");
    // Production's entries up to the cut, as stored (an exported bundle carries the exact bytes).
    const exported = await cli(prod, "log", "export", "--to", String(at));
    expect(exported.code, exported.stderr).toBe(0);
    const prefix: StoredEntry[] = exported.stdout
      .split("\n")
      .slice(1)
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { seq: number; subject: string; data: string })
      .filter((e) => e.seq <= at)
      .map((e) => ({ seq: e.seq, subject: e.subject, data: new Uint8Array(Buffer.from(e.data, "base64")) }));
    expect(prefix).toHaveLength(at);
    await seedSandbox(dir, prefix, ["worker"], new Set());
    const embedded = await startEmbedded({ dataDir: dir });
    try {
      const kernel = spawnService("kernel", ["--data", dir, "--nats", embedded.server.url]);
      await expect(kernel.ready).rejects.toThrow(/the log was started by kernel key \w+, but this kernel holds \w+/);
    } finally {
      await embedded.server.stop();
    }
    // Once the fork has handed the log over, the sandbox's own kernel needs no --fork.
    const own = await startEmbedded({ dataDir: sandbox });
    try {
      const kernel = spawnService("kernel", ["--data", sandbox, "--nats", own.server.url]);
      await kernel.ready;
      const exited = kernel.exited;
      kernel.child.kill("SIGTERM");
      await exited;
    } finally {
      await own.server.stop();
    }
  }, 30_000);

  it("refuses bad options with a clear message", async () => {
    const fixed = join(code, "worker-fixed.js");
    const zero = await cli(prod, "replay", "fork", "--at", "0", "--code", fixed, "--agent", "worker");
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/--at must be a log sequence \(1 or more\), not '0'/);
    const past = await cli(prod, "replay", "fork", "--at", "99999", "--code", fixed, "--agent", "worker");
    expect(past.code).toBe(1);
    expect(past.stderr).toMatch(/--at 99999 is past the end of the log \(last sequence \d+\)/);
    const stranger = await cli(prod, "replay", "fork", "--at", String(at), "--code", fixed, "--agent", "nobody");
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/agent 'nobody' is not registered in the log by #\d+ \[not_found\]/);
    const broken = await cli(prod, "replay", "fork", "--at", String(at), "--code", join(code, "broken.js"), "--agent", "worker");
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/has no default export with an onMessage handler/);
    const taken = await cli(prod, "replay", "fork", "--at", String(at), "--code", fixed, "--agent", "worker", "--into", sandbox);
    expect(taken.code).toBe(2);
    expect(taken.stderr).toMatch(/--into .* exists and is not empty/);
  }, 60_000);
});
