/**
 * Policy what-if over recorded effects and holds: a candidate set is judged against what the
 * kernel decided, including actions it held for a human ("hold" is its own outcome).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { LogEvent } from "../../src/protocol/mod.js";
import { PolicyEngine } from "../../services/kernel/policy.js";
import { whatIf } from "../../services/kernel/what-if.js";

const DEFAULTS = readFileSync(new URL("../../services/kernel/default-policies.cedar", import.meta.url), "utf8");
const TRACE = "0af7651916cd43dd8448eb211c80319c";
const decision = (policies: string[]) => ({ effect: "allow", policies, policySet: "x" });
const caused = { actor: "ops", principal: "alice", syscall: "s:0", trace: TRACE, depth: 1 };

const events = [
  { seq: 1, at: Date.UTC(2026, 0, 1, 12), type: "identity.registered", name: "alice", kind: "principal", groups: [], publicKey: "U" },
  { seq: 2, at: Date.UTC(2026, 0, 1, 12), type: "identity.registered", name: "ops", kind: "agent", groups: ["tool-users"], publicKey: "U" },
  { seq: 3, at: Date.UTC(2026, 0, 1, 12), type: "tool.registered", manifest: { name: "file-write", version: "1", description: "", input: {}, effect: "write" }, hash: "h" },
  { seq: 4, at: Date.UTC(2026, 0, 1, 12), type: "tool.registered", manifest: { name: "db-drop", version: "1", description: "", input: {}, effect: "destructive" }, hash: "h" },
  { ...caused, seq: 5, at: Date.UTC(2026, 0, 1, 12), type: "effect.started", kind: "tool", op: "call", target: "file-write", args: {}, labels: [], decision: decision(["tool-users-call-tools", "principal:principals-allow-tools"]) },
  { ...caused, seq: 6, at: Date.UTC(2026, 0, 1, 12), type: "approval.requested", op: "tool", request: { id: "s:1", to: "db-drop", body: {} }, digest: "d", reason: "destructive tool call", labels: [], expiresAt: 0, decision: decision(["hold-destructive", "principal:principals-allow-tools"]) },
] as unknown as LogEvent[];

function candidate(extra: string): PolicyEngine {
  const engine = new PolicyEngine();
  engine.load(`${DEFAULTS}\n${extra}`);
  return engine;
}

describe("policy what-if with tools and holds", () => {
  it("finds nothing changed under the set the decisions were made with", () => {
    const report = whatIf(events, candidate(""));
    expect(report).toMatchObject({ evaluated: 2, unchanged: 2, skipped: 0, changed: [] });
  });

  it("reports a recorded tool call that a candidate would hold, and one it would no longer hold", () => {
    const report = whatIf(
      events,
      candidate(`
@id("hold-all-writes")
@hold("every write is reviewed")
permit (principal in Maxwell::Group::"tool-users", action == Maxwell::Action::"tool.call", resource is Maxwell::Tool) when { resource.effect == "write" };
@id("no-drops")
forbid (principal, action == Maxwell::Action::"tool.call", resource == Maxwell::Tool::"db-drop");
`),
    );
    expect(report.changed.map((c) => [c.seq, c.resource, c.was, c.now])).toEqual([
      [5, "file-write", "allow", "hold"],
      [6, "db-drop", "hold", "deny"],
    ]);
  });
});
