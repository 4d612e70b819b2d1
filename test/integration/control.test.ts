/**
 * Operator control of an agent, against a real kernel: pause holds its deliveries and refuses its
 * syscalls (for now, not forever), resume delivers what was held, quarantine denies its actions
 * while it runs, and the state survives a kernel restart.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, decodeMap, type LogEvent } from "../../src/protocol/mod.js";
import { defineAgent, MaxwellError, type AgentContext } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

describe("agent control", () => {
  let h: Harness;
  const handled: string[] = [];
  const fence: string[] = [];
  let boss: AgentContext;
  let worker: AgentContext;

  const code = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
      return "allow";
    } catch (err) {
      return err instanceof MaxwellError ? err.code : String(err);
    }
  };

  beforeAll(async () => {
    h = await startHarness();
    const b = await h.register("boss", "agent", ["coordinators"]);
    const w = await h.register("worker", "agent", ["workers", "coordinators"]);
    const f = await h.register("fence", "agent", ["workers"]);
    await h.agent(defineAgent({ onMessage: (m) => void fence.push(String(m.body)) }), f.creds, "fence");
    await h.agent(
      defineAgent({
        onStart: (ctx) => void (worker = ctx),
        onMessage: (m) => void handled.push(String(m.body)),
      }),
      w.creds,
      "worker",
    );
    await h.agent(defineAgent({ onStart: (ctx) => void (boss = ctx), onMessage() {} }), b.creds, "boss");
  });
  afterAll(async () => {
    await h?.close();
  });

  it("pauses an agent: its work is accepted and kept but not delivered, and its own syscalls are refused for now", async () => {
    const r = await h.admin.control({ agent: "worker", state: "paused", reason: "investigating" });
    expect(r).toMatchObject({ was: "running", state: "paused" });
    for (const n of ["a", "b", "c"]) await boss.send("worker", n);
    // A later message to another agent arrives: by then the held ones would have been handed over.
    await boss.send("fence", "after");
    await until(() => fence.includes("after"), "the fence message");
    expect(handled).toEqual([]);
    expect(await code(worker.send("fence", "from-paused"))).toBe("unavailable");
    expect((await h.admin.list()).find((i) => i.name === "worker")?.control).toBe("paused");
  });

  it("keeps the pause across a kernel restart, then resume delivers everything that was held, in order", async () => {
    await h.killKernel("SIGTERM");
    await h.startKernel();
    await h.admin.waitForKernel();
    expect(await code(worker.send("fence", "still-paused"))).toBe("unavailable");
    await h.admin.control({ agent: "worker", state: "running" });
    await until(() => handled.length === 3, "the held messages", 20_000);
    expect(handled).toEqual(["a", "b", "c"]);
    // The refusals while paused were not final: the same agent can act now.
    expect(await code(worker.send("fence", "resumed"))).toBe("allow");
  });

  it("quarantines an agent: it keeps running and receiving, but its actions are denied until released", async () => {
    await h.admin.control({ agent: "worker", state: "quarantined" });
    await boss.send("worker", "d");
    await until(() => handled.includes("d"), "delivery to the quarantined agent");
    expect(await code(worker.send("fence", "from-quarantine"))).toBe("forbidden");
    await h.admin.control({ agent: "worker", state: "running" });
    expect(await code(worker.send("fence", "released"))).toBe("allow");
    await until(() => fence.includes("released"), "the released agent's message");
    expect(fence).not.toContain("from-quarantine");

    const events: LogEvent[] = [];
    for await (const e of h.admin.entries(1)) events.push(decodeMap(e.data) as unknown as LogEvent);
    const controls = events.filter((e) => e.type === EventType.AgentControlled).map((e) => (e.type === EventType.AgentControlled ? e.state : ""));
    expect(controls).toEqual(["paused", "running", "quarantined", "running"]);
    const refusals = events.filter((e) => e.type === EventType.Denied && e.actor === "worker").map((e) => (e.type === EventType.Denied ? e.decision.policies[0] : ""));
    expect(refusals).toEqual(["kernel:paused", "kernel:paused", "kernel:quarantined"]);
  });

  it("refuses to control an unknown agent or set an unknown state", async () => {
    await expect(h.admin.control({ agent: "nobody", state: "paused" })).rejects.toThrow(/no agent named "nobody"/);
    await expect(h.admin.control({ agent: "worker", state: "asleep" as never })).rejects.toThrow(/state must be one of/);
  });

  it("kills an agent: its credential is revoked at the server, and requests waiting on it fail at once", async () => {
    const v = await h.register("victim", "agent", ["workers"]);
    let release: () => void = () => undefined;
    const stuck = new Promise<void>((r) => (release = r));
    let started = false;
    await h.agent(
      defineAgent({
        async onMessage() {
          started = true;
          await stuck;
        },
      }),
      v.creds,
      "victim",
    );
    const { connectNats } = await import("../../src/transport/connection.js");
    const watcher = await connectNats({ servers: h.url, creds: new TextEncoder().encode(v.creds), name: "victim-watch", inboxPrefix: "mx.rep.victim", reconnect: false });
    const watcherClosed = watcher.closed();
    const asked = boss.request("victim", "job", { timeoutMs: 60_000 }).then(
      () => "answered",
      (err: unknown) => (err instanceof MaxwellError ? `${err.code}: ${err.message}` : String(err)),
    );
    await until(() => started, "the victim to start on the request");

    const r = await h.admin.control({ agent: "victim", state: "killed", reason: "rogue" });
    expect(r).toMatchObject({ was: "running", state: "killed" });
    expect(await asked).toMatch(/^unavailable: .*'victim' was killed/);
    expect(String(await watcherClosed)).toMatch(/Revoked/i);
    await expect(connectNats({ servers: h.url, creds: new TextEncoder().encode(v.creds), name: "again", reconnect: false })).rejects.toThrow(/Authorization Violation/);
    expect(await code(boss.send("victim", "more"))).toBe("not_found");
    await expect(h.admin.control({ agent: "victim", state: "running" })).rejects.toThrow(/stays killed/);
    const { readFileSync } = await import("node:fs");
    expect(Object.keys(JSON.parse(readFileSync(h.layout.revocations, "utf8")) as object)).toEqual([v.publicKey]);
    release();
  });
});
