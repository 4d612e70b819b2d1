/**
 * Processes the daemon starts stop once it is gone (src/runtime/orphan.ts): a direct child by
 * its parent changing, one started through a wrapper (`sh -c ...`) by the daemon's pid dying.
 * Real processes: a stand-in daemon, and a child that runs the built module.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/runtime/paths.js";
import { SUPERVISOR_PID_ENV, stopWhenOrphaned } from "../../src/runtime/orphan.js";
import { until } from "../support/harness.js";

const built = pathToFileURL(join(packageRoot, "dist", "src", "runtime", "orphan.js")).href;
/** A child that watches its daemon, says so, and says when it is told to stop. */
const CHILD = `
import { stopWhenOrphaned } from ${JSON.stringify(built)};
process.on("SIGTERM", () => { console.log("stopping"); process.exit(0); });
console.log(stopWhenOrphaned("test-child") ? "watching" : "not watching");
setInterval(() => undefined, 1000);
`;

describe("stopWhenOrphaned", () => {
  const started: ChildProcess[] = [];
  afterEach(() => {
    for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  });

  it("does nothing in a process the daemon did not start", () => {
    const before = process.env[SUPERVISOR_PID_ENV];
    delete process.env[SUPERVISOR_PID_ENV];
    try {
      expect(stopWhenOrphaned("test")).toBe(false);
    } finally {
      if (before !== undefined) process.env[SUPERVISOR_PID_ENV] = before;
    }
  });

  it("keeps a child started through a wrapper running while the daemon lives, and stops it when the daemon dies", async () => {
    // The stand-in daemon: a process that lives until killed.
    const daemon = spawn(process.execPath, ["-e", "setInterval(() => undefined, 1000)"], { stdio: "ignore" });
    started.push(daemon);
    const dir = mkdtempSync(join(tmpdir(), "maxwell-orphan-"));
    const script = join(dir, "child.mjs");
    writeFileSync(script, CHILD);
    // Not exec'd: sh stays the child's parent, as with an agent command that is a shell line.
    const child = spawn("sh", ["-c", `"${process.execPath}" "${script}"; echo wrapper-done`], {
      env: { ...process.env, [SUPERVISOR_PID_ENV]: String(daemon.pid) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    started.push(child);
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    await until(() => /watching/.test(out), "the child to start");
    expect(out).toMatch(/^watching$/m);
    // Several checks pass while the daemon lives: its pid is not the child's parent (sh is), and
    // that alone must not stop it.
    // A window in which nothing may happen (not a wait for an event): the check at start and at
    // least one periodic check pass while the daemon lives.
    await new Promise((r) => setTimeout(r, 1500));
    expect(out).not.toContain("stopping");
    daemon.kill("SIGKILL");
    await until(() => out.includes("stopping"), "the child to notice the daemon is gone", 10_000);
    rmSync(dir, { recursive: true, force: true });
  });
});
