/**
 * The daemon (`maxwell up --demo`): runs each agent as its own process with its own credential,
 * restarts one that crashes, and the demo's work still completes through the restarted agent.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { cliEntry } from "../../src/runtime/paths.js";
import type { DaemonInfo } from "../../src/runtime/supervisor.js";
import { LogIndex } from "../../src/runtime/log-index.js";
import { eventually, until } from "../support/harness.js";

const run = promisify(execFile);

describe("maxwell up --demo", () => {
  const dir = mkdtempSync(join(tmpdir(), "maxwell-daemon-"));
  let daemon: ChildProcess | undefined;
  afterAll(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon?.once("exit", r));
      daemon.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const info = (): DaemonInfo => JSON.parse(readFileSync(join(dir, "run", "daemon.json"), "utf8")) as DaemonInfo;
  const log = async (...args: string[]): Promise<string> =>
    (await run(process.execPath, [cliEntry(), "--data", dir, "log", ...args], { env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" } })).stdout;

  it("shows allowed and denied traffic, and restarts an agent killed -9 without losing its work", async () => {
    daemon = spawn(process.execPath, [cliEntry(), "--data", dir, "up", "--demo"], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" } });
    const d = daemon;
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: d.stdout! }).on("line", (line) => {
        if (line.startsWith("maxwell ready")) resolve();
      });
      d.once("exit", (code) => reject(new Error(`maxwell up exited with ${String(code)}`)));
    });

    // The demo's traffic: two tasks fanned out (four requests, four replies) and two denials.
    await eventually(async () => {
      const text = await log();
      return (text.match(/reply\s+worker-\d → coordinator/g) ?? []).length >= 4 && /DENIED\s+rogue request → coordinator/.test(text);
    }, "the demo traffic", 30_000);

    const before = info();
    const workerPid = before.agents["worker-1"]?.pid;
    expect(workerPid).toBeGreaterThan(0);
    process.kill(workerPid as number, "SIGKILL");
    await until(() => {
      const now = info().agents["worker-1"];
      return now !== undefined && now.restarts >= 1 && now.pid !== workerPid;
    }, "the supervisor to restart worker-1", 20_000);

    const sent = await run(process.execPath, [cliEntry(), "--data", dir, "send", "--as", "alice", "--to", "coordinator", '{"task":"shout","items":["after","restart"]}'], {
      env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" },
    });
    const trace = /trace (\w+)/.exec(sent.stdout)?.[1] as string;
    expect(trace).toMatch(/^[0-9a-f]{32}$/);
    await eventually(async () => /reply\s+worker-1 → coordinator.*AFTER/.test(await log("--trace", trace)), "the restarted worker-1 to answer", 30_000);
  }, 90_000);

  it("replays the incident: the token an agent finds is redacted everywhere, and its drop waits for a human who says no", async () => {
    const cli = async (...args: string[]) => (await run(process.execPath, [cliEntry(), "--data", dir, ...args], { env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" } })).stdout;
    await eventually(async () => /HELD\s+ops tool → db-drop/.test(await log()), "the held drop", 30_000);
    const text = await log();
    expect(text).toMatch(/result\s+ops ← file-read .*REDACTED 1/);
    const token = /Admin token for the database \(temporary, remove me\): (\S+)/.exec(readFileSync(join(dir, "workspace", "ops", "runbook.md"), "utf8"))?.[1] as string;
    expect(token).toMatch(/^dbadm-/);
    expect(await log("--json")).not.toContain(token);
    for (const f of readdirSync(join(dir, "logs"))) expect(readFileSync(join(dir, "logs", f), "utf8")).not.toContain(token);

    const held = JSON.parse(await cli("approvals", "--json")) as Array<{ id: string; to: string }>;
    const drop = held.find((a) => a.to === "db-drop");
    expect(drop).toBeDefined();
    await cli("deny", drop?.id as string, "--as", "carol", "--reason", "not part of a cleanup");
    expect(await log()).toMatch(/REFUSED\s+\S+ by carol: not part of a cleanup/);
    expect((JSON.parse(await cli("approvals", "--all", "--json")) as Array<{ id: string; status: string }>).find((a) => a.id === drop?.id)?.status).toBe("denied");
    const tables = JSON.parse(readFileSync(join(dir, "db", "customers.json"), "utf8")) as unknown;
    expect(tables).toBeTruthy();
  }, 90_000);

  it("keeps the log index caught up with the log while it runs", async () => {
    const events = JSON.parse(`[${(await log("--json")).trim().split("\n").join(",")}]`) as Array<{ seq: number }>;
    const last = Math.max(...events.map((e) => e.seq));
    const index = LogIndex.open(join(dir, "index"));
    try {
      await until(() => (index.watermark()?.seq ?? 0) >= last, "the daemon's follower to index the log", 15_000);
    } finally {
      await index.close();
    }
  }, 30_000);
});
