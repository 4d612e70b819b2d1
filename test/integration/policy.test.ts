/**
 * Policy what-if and apply, against a real kernel: `policy test` re-evaluates the recorded
 * decisions under a candidate set without touching the live one; `policy apply` refuses a set
 * that does not validate (the old one stays) and logs a valid one before deciding under it.
 */
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, decodeMap, type LogEvent } from "../../src/protocol/mod.js";
import { cliEntry, packageRoot } from "../../src/runtime/paths.js";
import { defineAgent, MaxwellError } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

const run = promisify(execFile);
const DEFAULT = readFileSync(join(packageRoot, "services", "kernel", "default-policies.cedar"), "utf8");
/** The default set without the policy that lets coordinators hand work to workers. */
const WITHOUT_FANOUT = DEFAULT.slice(0, DEFAULT.indexOf('@id("coordinators-to-workers")'));

/** Events appended after `seq`, leaving out the kernel's periodic checkpoints. */
async function appendedSince(h: Harness, seq: number): Promise<LogEvent[]> {
  return (await allEvents(h)).filter((e) => e.seq > seq && e.type !== EventType.Checkpoint);
}

async function allEvents(h: Harness): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  for await (const e of h.admin.entries(1)) out.push(decodeMap(e.data) as unknown as LogEvent);
  return out;
}

describe("policy what-if and apply", () => {
  let h: Harness;
  const outcomes: string[] = [];
  let ask: (n: number) => Promise<void>;

  beforeAll(async () => {
    h = await startHarness();
    const boss = await h.register("boss", "agent", ["coordinators"]);
    const helper = await h.register("helper", "agent", ["workers"]);
    await h.agent(defineAgent({ onMessage: (m) => m.body }), helper.creds, "helper");
    let ctxRef: { request: (to: string, body: unknown) => Promise<unknown> } | undefined;
    await h.agent(
      defineAgent({
        onStart(ctx) {
          ctxRef = ctx;
        },
        onMessage() {},
      }),
      boss.creds,
      "boss",
    );
    ask = async (n: number) => {
      try {
        await ctxRef?.request("helper", n);
        outcomes.push("allow");
      } catch (err) {
        outcomes.push(err instanceof MaxwellError ? err.code : String(err));
      }
    };
    for (let i = 0; i < 3; i++) await ask(i);
  });
  afterAll(async () => {
    await h?.close();
  });

  it("reports the recorded decisions a candidate set would change, and changes nothing", async () => {
    expect(outcomes).toEqual(["allow", "allow", "allow"]);
    const before = await h.admin.status();
    const r = await h.admin.policyTest({ text: WITHOUT_FANOUT });
    const requests = r.changed.filter((c) => c.action === "message.request");
    expect(requests).toHaveLength(3);
    expect(requests.every((c) => c.actor === "boss" && c.resource === "helper" && c.was === "allow" && c.now === "deny")).toBe(true);
    // The helper's replies are still permitted by agents-reply: evaluated, unchanged.
    expect(r.unchanged).toBeGreaterThanOrEqual(3);
    expect(r.evaluated).toBe(r.unchanged + r.changed.length);
    const after = await h.admin.status();
    expect(after.policySet).toBe(before.policySet);
    expect(await appendedSince(h, before.seq)).toEqual([]);

    const since = requests[1]?.seq as number;
    expect((await h.admin.policyTest({ text: WITHOUT_FANOUT, since })).changed.filter((c) => c.action === "message.request")).toHaveLength(1);

    const candidate = join(h.dir, "candidate.cedar");
    writeFileSync(candidate, WITHOUT_FANOUT);
    const cli = await run(process.execPath, [cliEntry(), "--data", h.dir, "--nats", h.url, "policy", "test", candidate], { env: process.env });
    expect(cli.stdout).toMatch(/decisions re-evaluated, \d+ unchanged, 3 would change/);
    expect(cli.stdout.match(/boss message\.request helper for boss: allow → deny/g)).toHaveLength(3);
    const gate = await run(process.execPath, [cliEntry(), "--data", h.dir, "--nats", h.url, "policy", "test", "--exit-code", candidate], { env: process.env }).catch((e: { code: number }) => e);
    expect("code" in gate ? gate.code : 0).toBe(4);
  });

  it("refuses a policy set that does not validate, and keeps the old one in force", async () => {
    const before = await h.admin.status();
    await expect(h.admin.policyApply('permit(principal, action == Maxwell::Action::"message.fly", resource);')).rejects.toThrow(/does not validate|unrecognized action/);
    const after = await h.admin.status();
    expect(after.policySet).toBe(before.policySet);
    expect(await appendedSince(h, before.seq)).toEqual([]);
    await ask(99);
    expect(outcomes.at(-1)).toBe("allow");
  });

  it("logs an applied set before deciding under it", async () => {
    const r = await h.admin.policyApply(WITHOUT_FANOUT);
    expect(r.seq).toBeGreaterThan(0);
    const n = outcomes.length;
    await ask(100);
    await until(() => outcomes.length === n + 1, "the request's outcome");
    expect(outcomes.at(-1)).toBe("forbidden");
    const events = await allEvents(h);
    const loaded = events.find((e) => e.seq === r.seq);
    expect(loaded?.type).toBe(EventType.PolicyLoaded);
    const denial = events.filter((e) => e.type === EventType.Denied && e.actor === "boss").at(-1);
    expect(denial?.seq).toBeGreaterThan(r.seq);
    expect(denial && "decision" in denial ? denial.decision.policySet : "").toBe(r.policySet);
    expect(readFileSync(h.layout.policies, "utf8")).toBe(WITHOUT_FANOUT);
  });
});
