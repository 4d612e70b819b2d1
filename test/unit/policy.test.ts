/**
 * The policy decision point (promise 3): default deny, a set that does not validate is refused
 * while the old one stays in force, and a policy whose evaluation errors makes the decision a
 * deny — Cedar alone would skip an erroring `forbid` and allow.
 */
import { readFileSync } from "node:fs";
import { beforeEach, describe, expect, it } from "vitest";
import { PolicyEngine, type DecisionRequest, type Entity } from "../../services/kernel/policy.js";
import { refusal } from "../support/refusal.js";

const DEFAULTS = readFileSync(new URL("../../services/kernel/default-policies.cedar", import.meta.url), "utf8");

const alice: Entity = { type: "Principal", name: "alice", groups: [] };
const coord: Entity = { type: "Agent", name: "coord", groups: ["coordinators"] };
const worker: Entity = { type: "Agent", name: "worker", groups: ["workers"] };
const loner: Entity = { type: "Agent", name: "loner", groups: [] };

function ask(actor: Entity, resource: Entity, extra: Partial<DecisionRequest> = {}): DecisionRequest {
  return { actor, action: "message.send", resource, principal: actor.name, depth: 0, labels: [], at: Date.UTC(2026, 0, 1, 12), ...extra };
}

const OVERFLOW_GUARD = `
@id("overflow-guard")
forbid (principal, action, resource) when { context.depth * 9223372036854775807 > 0 };
`;

describe("PolicyEngine", () => {
  let engine: PolicyEngine;
  beforeEach(() => {
    engine = new PolicyEngine();
  });

  it("denies everything while no policy set is loaded", () => {
    const d = engine.decide(ask(alice, coord));
    expect(d.effect).toBe("deny");
    expect(d.errors).toEqual(["no policy set loaded"]);
  });

  it("loads the default set with its policy ids and a hash of its text", () => {
    const set = engine.load(DEFAULTS);
    expect([...set.ids].sort()).toEqual(
      [
        "agents-own-memory",
        "agents-read-tools",
        "agents-reply",
        "agents-use-models",
        "approvers-decide",
        "confidential-to-cleared-agents",
        "confidential-to-cleared-tools",
        "coordinators-to-workers",
        "hold-destructive",
        "hold-untrusted-consequential",
        "principals-allow-memory",
        "principals-allow-models",
        "principals-allow-replies",
        "principals-allow-tools",
        "principals-send-work",
        "tool-users-call-tools",
      ],
    );
    expect([...set.holds.keys()].sort()).toEqual(["hold-destructive", "hold-untrusted-consequential"]);
    expect(set.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(engine.policySet).toBe(set);
  });

  it("permits what a policy permits and names that policy", () => {
    engine.load(DEFAULTS);
    expect(engine.decide(ask(alice, coord))).toEqual({ effect: "allow", policies: ["principals-send-work"], policySet: engine.policySet.hash });
    expect(engine.decide(ask(coord, worker, { action: "message.request" })).policies).toEqual(["coordinators-to-workers"]);
    expect(engine.decide(ask(worker, coord, { action: "message.reply" })).policies).toEqual(["agents-reply"]);
  });

  it("denies by default when no policy permits, naming no policy", () => {
    engine.load(DEFAULTS);
    for (const [actor, resource] of [
      [loner, worker],
      [worker, coord],
      [worker, worker],
      [coord, coord],
    ] as const) {
      const d = engine.decide(ask(actor, resource));
      expect(d).toEqual({ effect: "deny", policies: [], policySet: engine.policySet.hash });
    }
  });

  it("decides on group membership as it is now, not as it was cached", () => {
    engine.load(DEFAULTS);
    expect(engine.decide(ask({ ...coord, groups: [] }, worker)).effect).toBe("deny");
    expect(engine.decide(ask(coord, worker)).effect).toBe("allow");
    expect(engine.decide(ask({ ...coord, groups: [] }, worker)).effect).toBe("deny");
  });

  it("lets a forbid override a permit and names it", () => {
    engine.load(`${DEFAULTS}
@id("no-work-for-eve")
forbid (principal, action, resource) when { context.principal == "eve" };
`);
    expect(engine.decide(ask(coord, worker, { principal: "alice" })).effect).toBe("allow");
    expect(engine.decide(ask(coord, worker, { principal: "eve" }))).toMatchObject({ effect: "deny", policies: ["no-work-for-eve"] });
  });

  it("denies when a forbid's condition fails to evaluate (an overflow), and names the error", () => {
    engine.load(DEFAULTS + OVERFLOW_GUARD);
    // depth 0: 0 * max = 0, no error, the forbid does not apply.
    expect(engine.decide(ask(alice, coord, { depth: 0 })).effect).toBe("allow");
    // depth 2: the multiplication overflows; Cedar skips the forbid, the kernel must not.
    const d = engine.decide(ask(alice, coord, { depth: 2 }));
    expect(d.effect).toBe("deny");
    expect(d.policies).toContain("overflow-guard");
    expect(d.errors?.join("\n")).toMatch(/overflow-guard/);
    expect(d.errors?.join("\n")).toMatch(/overflow/i);
  });

  it("denies when a permit's condition fails to evaluate, even if another permit applies", () => {
    engine.load(`${DEFAULTS}
@id("deep-permit")
permit (principal, action, resource) when { context.depth * 9223372036854775807 > 0 };
`);
    const d = engine.decide(ask(alice, coord, { depth: 3 }));
    expect(d.effect).toBe("deny");
    expect(d.policies).toEqual(["deep-permit"]);
  });

  describe("holds and labels", () => {
    const tool = (effect: string): Entity => ({ type: "Tool", name: `t-${effect}`, groups: [], attrs: { effect } });
    const toolUser: Entity = { type: "Agent", name: "ops", groups: ["tool-users"] };

    it("says why an allowed decision must wait for a human when a @hold permit matched", () => {
      engine.load(DEFAULTS);
      const destructive = engine.decide(ask(toolUser, tool("destructive"), { action: "tool.call" }));
      expect(destructive.effect).toBe("allow");
      expect(engine.holdReason(destructive)).toBe("destructive tool call");
      const write = engine.decide(ask(toolUser, tool("write"), { action: "tool.call" }));
      expect(write.effect).toBe("allow");
      expect(engine.holdReason(write)).toBeUndefined();
    });

    it("lets policies read labels: untrusted input turns a write into a hold, confidential data stays with cleared sinks", () => {
      engine.load(DEFAULTS);
      const steered = engine.decide(ask(toolUser, tool("write"), { action: "tool.call", labels: ["untrusted"] }));
      expect(steered.policies).toEqual(["hold-untrusted-consequential"]);
      expect(engine.holdReason(steered)).toBe("untrusted data steers a consequential tool call");
      expect(engine.holdReason(engine.decide(ask(toolUser, tool("read"), { action: "tool.call", labels: ["untrusted"] })))).toBeUndefined();
      expect(engine.decide(ask(alice, worker, { labels: ["conf:pii"] }))).toMatchObject({ effect: "deny", policies: ["confidential-to-cleared-agents"] });
      expect(engine.decide(ask(alice, { ...worker, groups: ["workers", "cleared"] }, { labels: ["conf:pii"] })).effect).toBe("allow");
    });

    it("refuses @hold on a forbid: a forbid already denies", () => {
      const e = refusal(() => engine.load(`@id("x") @hold("no") forbid (principal, action, resource);`));
      expect(e.message).toMatch(/@hold belongs on a permit/);
    });

    it("gives policies the kernel clock as data (UTC hour and weekday)", () => {
      engine.load(`${DEFAULTS}
@id("no-night-work")
forbid (principal, action == Maxwell::Action::"message.send", resource) when { context.hour < 6 };
`);
      expect(engine.decide(ask(alice, coord, { at: Date.UTC(2026, 0, 1, 3) })).effect).toBe("deny");
      expect(engine.decide(ask(alice, coord, { at: Date.UTC(2026, 0, 1, 9) })).effect).toBe("allow");
    });
  });

  describe("loading a bad policy set", () => {
    it.each([
      ["does not parse", "permit (principal, action, resource"],
      ["names an action the schema does not have", `@id("bad") permit (principal, action == Maxwell::Action::"file.delete", resource);`],
      ["names an entity type the schema does not have", `@id("bad") permit (principal is Maxwell::Robot, action, resource);`],
      ["reads a context attribute the schema does not have", `@id("bad") permit (principal, action, resource) when { context.nope == 1 };`],
      ["compares values of different types", `@id("bad") permit (principal, action, resource) when { context.depth == "deep" };`],
      ["has two policies with the same id", `@id("twice") permit (principal, action, resource);\n@id("twice") forbid (principal, action, resource);`],
      ["uses a template", `@id("tpl") permit (principal == ?principal, action, resource);`],
    ])("refuses a set that %s and keeps the old set in force", (_what, text) => {
      const before = engine.load(DEFAULTS);
      const e = refusal(() => engine.load(text));
      expect(e.code).toBe("bad_request");
      expect(e.message).toMatch(/polic(y|ies)/);
      expect(engine.policySet).toBe(before);
      expect(engine.decide(ask(alice, coord)).effect).toBe("allow");
      expect(engine.decide(ask(loner, worker)).effect).toBe("deny");
    });

    it("keeps an erroring-forbid set in force after a bad set is refused", () => {
      engine.load(DEFAULTS + OVERFLOW_GUARD);
      refusal(() => engine.load("forbid ("));
      expect(engine.decide(ask(alice, coord, { depth: 5 })).effect).toBe("deny");
    });
  });
});
