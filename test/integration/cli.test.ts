/**
 * End to end through the real CLI: `maxwell up`, `principal add`, `agent add`, `send`, `log`,
 * `verify`, then tampering with the stored log on disk and `verify` catching it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEntry, packageRoot } from "../../src/runtime/paths.js";
import { isProcessAlive, type DaemonInfo } from "../../src/runtime/supervisor.js";
import { until } from "../support/harness.js";
import { runCli, type CliResult } from "../support/cli.js";


function maxwell(dir: string, ...args: string[]): Promise<CliResult> {
  return runCli(["--data", dir, ...args]);
}

function startDaemon(dir: string): { child: ChildProcess; ready: Promise<string> } {
  const child = spawn(process.execPath, [cliEntry(), "--data", dir, "up"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" } });
  const ready = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("maxwell ready")) resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`maxwell up exited with ${String(code)}`)));
  });
  return { child, ready };
}

async function stopDaemon(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  return exited;
}

function blockFile(dir: string): string {
  const root = join(dir, "nats", "store", "jetstream");
  const account = readdirSync(root).find((d) => d.startsWith("A")) as string;
  const msgs = join(root, account, "streams", "MXLOG", "msgs");
  return join(msgs, readdirSync(msgs).find((f) => f.endsWith(".blk")) as string);
}

describe("maxwell CLI", () => {
  let dir: string;
  let daemon: ChildProcess | undefined;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-cli-"));
  });
  afterAll(async () => {
    if (daemon) await stopDaemon(daemon);
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs up, agent add, send, log and verify, and shuts down cleanly", async () => {
    const d = startDaemon(dir);
    daemon = d.child;
    const ready = await d.ready;
    expect(ready).toMatch(/nats=nats:\/\/127\.0\.0\.1:\d+/);
    expect(ready).toContain(`data=${dir}`);

    expect((await maxwell(dir, "principal", "add", "alice")).code).toBe(0);
    const added = await maxwell(dir, "agent", "add", "echo", "--group", "workers");
    expect(added.code).toBe(0);
    const creds = readFileSync(join(dir, "creds", "echo.creds"), "utf8");
    expect(creds).toContain("BEGIN NATS USER JWT");

    const sent = await maxwell(dir, "send", "--as", "alice", "--to", "echo", '{"secret":"tamper-me"}');
    expect(sent.code).toBe(0);
    expect(sent.stdout).toMatch(/sent: event \w+ \(seq \d+\) to echo as alice/);
    expect((await maxwell(dir, "send", "--as", "alice", "--to", "echo", "second-send")).code).toBe(0);
    expect((await maxwell(dir, "send", "--as", "alice", "--to", "echo", "third")).code).toBe(0);

    const denied = await maxwell(dir, "send", "--as", "alice", "--to", "nobody", "hi");
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^maxwell: no agent named 'nobody' is registered \[not_found\]/);

    const log = await maxwell(dir, "log", "--principal", "alice");
    expect(log.code).toBe(0);
    expect(log.stdout).toMatch(/send\s+alice → echo\s+for alice\s+allow \[principals-send-work\].*tamper-me/);
    expect(log.stdout).toMatch(/DENIED\s+alice send → nobody/);
    const json = (await maxwell(dir, "log", "--json", "--type", "message")).stdout.trim().split("\n").map((l) => JSON.parse(l) as { actor: string; to: string });
    expect(json).toHaveLength(3);
    expect(json.every((e) => e.actor === "alice" && e.to === "echo")).toBe(true);

    const status = await maxwell(dir, "status", "--json");
    expect(status.code).toBe(0);
    const s = JSON.parse(status.stdout) as { healthy: boolean; daemon: { durability: { mode: string } } };
    expect(s.healthy).toBe(true);
    expect(s.daemon.durability.mode).toBe("os-buffered");

    const verified = await maxwell(dir, "verify");
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^ok: \d+ events, hash chain intact/);

    const replayed = await maxwell(dir, "replay", "state");
    expect(replayed.code).toBe(0);
    expect(replayed.stdout).toMatch(/^identical: rebuilt from the log up to #\d+/);
    expect(replayed.stdout).toMatch(/^ {2}kernel {2}identical: \d+ events folded/m);
    expect(replayed.stdout).toMatch(/^ {2}memory {2}identical/m);
    const asOf = await maxwell(dir, "replay", "state", "--to", "3", "--json");
    expect(JSON.parse(asOf.stdout)).toMatchObject({ seq: 3, events: 3 });

    expect(await stopDaemon(d.child)).toBe(0);
    daemon = undefined;
    expect((await maxwell(dir, "status")).stdout).toMatch(/not running/);
  });

  it("log --follow prints new events as they are logged and stops cleanly on SIGINT", async () => {
    const d = startDaemon(dir);
    daemon = d.child;
    await d.ready;
    const follower = spawn(process.execPath, [cliEntry(), "--data", dir, "log", "--follow", "--type", "message"], { stdio: ["ignore", "pipe", "pipe"] });
    const lines: string[] = [];
    createInterface({ input: follower.stdout! }).on("line", (line) => lines.push(line));
    const exited = new Promise<number | null>((r) => follower.once("exit", (code) => r(code)));
    // The three earlier sends are printed first; then a new one appears while following.
    await until(() => lines.length >= 3, "the earlier messages", 15_000);
    expect((await maxwell(dir, "send", "--as", "alice", "--to", "echo", "followed")).code).toBe(0);
    await until(() => lines.some((l) => l.includes("followed")), "the new message while following", 15_000);
    follower.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(await stopDaemon(d.child)).toBe(0);
    daemon = undefined;
  });

  it("verify names the first edited event in the stored log", async () => {
    const listed = await maxwell(dir, "log", "--json", "--type", "message");
    const seq = (listed.stdout.trim().split("\n").map((l) => JSON.parse(l) as { seq: number; body: unknown }).find((e) => JSON.stringify(e.body).includes("tamper-me")) as { seq: number }).seq;
    const blk = blockFile(dir);
    const original = readFileSync(blk);
    const pristine = `${blk}.pristine`;
    copyFileSync(blk, pristine);
    const at = original.indexOf("tamper-me");
    expect(at).toBeGreaterThan(0);
    const edited = Buffer.from(original);
    edited.write("tamper-ME", at);
    writeFileSync(blk, edited);

    const verified = await maxwell(dir, "verify");
    expect(verified.code).toBe(3);
    // The server may serve the edited bytes (hash mismatch) or drop the record on its checksum (gap): both name it.
    expect(verified.stdout).toMatch(new RegExp(`^FAILED at event #${seq}: (event #${seq} was altered|event ${seq} is missing)`));
    copyFileSync(pristine, blk);
    unlinkSync(pristine);
    expect((await maxwell(dir, "verify")).code).toBe(0);
  });

  it("verify catches events missing from the stored log", async () => {
    const blk = blockFile(dir);
    const original = readFileSync(blk);
    const at = original.indexOf("second-send");
    expect(at).toBeGreaterThan(0);
    const corrupted = Buffer.from(original);
    corrupted[at] = (corrupted[at] as number) ^ 0x20;
    writeFileSync(blk, corrupted);
    // Without its index the server rebuilds the block and drops the corrupted record and those after it.
    for (const f of readdirSync(join(blk, ".."))) if (f.endsWith(".idx")) unlinkSync(join(blk, "..", f));

    const verified = await maxwell(dir, "verify");
    expect(verified.code).toBe(3);
    expect(verified.stdout).toMatch(/^FAILED at event #\d+: .*(missing|truncated|altered)/);
  });
});

describe("maxwell up killed outright", () => {
  const dir = mkdtempSync(join(tmpdir(), "maxwell-orphans-"));
  const spawned: ChildProcess[] = [];
  const servers: number[] = [];
  const alive = isProcessAlive;
  afterAll(async () => {
    for (const c of spawned) if (c.exitCode === null && c.signalCode === null) await stopDaemon(c);
    // A failed run may leave the first daemon's nats-server behind.
    for (const pid of servers) if (alive(pid)) process.kill(pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("leaves no kernel, service or agent behind, and the next up takes over the data dir", async () => {
    writeFileSync(join(dir, "maxwell.json"), JSON.stringify({ agents: [{ name: "echo", command: ["node", join(packageRoot, "dist", "examples", "demo", "worker.js")], groups: ["workers"] }] }));
    const first = startDaemon(dir);
    spawned.push(first.child);
    await first.ready;
    const info = JSON.parse(readFileSync(join(dir, "run", "daemon.json"), "utf8")) as DaemonInfo;
    const children = [info.kernel.pid, ...Object.values(info.services ?? {}).map((s) => s.pid), ...Object.values(info.agents).map((a) => a.pid)];
    expect(children).toHaveLength(5);
    expect(children.every(alive)).toBe(true);
    if (info.server.pid !== undefined) servers.push(info.server.pid);

    first.child.kill("SIGKILL");
    // Each one notices its daemon is gone and stops itself (within about a second, plus its shutdown).
    await until(() => !children.some(alive), "the orphaned kernel, services and agent to stop", 30_000);
    expect(alive(info.server.pid)).toBe(true);

    const second = startDaemon(dir);
    spawned.push(second.child);
    await second.ready;
    expect(alive(info.server.pid)).toBe(false);
    const verified = await maxwell(dir, "verify");
    expect(verified.code).toBe(0);
    expect(await stopDaemon(second.child)).toBe(0);
  }, 90_000);
});
