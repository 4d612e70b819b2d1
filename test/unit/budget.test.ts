import { describe, expect, it } from "vitest";
import { ErrorCode, type TraceId } from "../../src/protocol/mod.js";
import { Budgets, budgetKeys } from "../../services/kernel/budget.js";

const TRACE = "0af7651916cd43dd8448eb211c80319c" as TraceId;

describe("budgets", () => {
  it("counts an agent's action against the agent, its principal and the trace; a principal's own against itself and the trace", () => {
    expect(budgetKeys("worker", "alice", TRACE)).toEqual(["agent:worker", "principal:alice", `trace:${TRACE}`]);
    expect(budgetKeys("alice", "alice", TRACE)).toEqual(["principal:alice", `trace:${TRACE}`]);
  });

  it("reserves before and settles after: what is reserved counts until the outcome replaces it", () => {
    const b = new Budgets();
    b.setLimits("principal", "alice", { tokens: 1000 });
    const keys = budgetKeys("worker", "alice", TRACE);
    expect(b.check(keys, { reserve: { tokens: 600 }, depth: 1, now: 0 })).toBeUndefined();
    b.onEffectStarted(keys, { tokens: 600 });
    const over = b.check(keys, { reserve: { tokens: 600 }, depth: 1, now: 0 });
    expect(over?.code).toBe(ErrorCode.BudgetExceeded);
    expect(over?.message).toMatch(/principal alice has used or reserved 600 of 1000 tokens; this action needs 600 more/);
    b.onEffectCompleted(keys, { tokens: 600 }, { tokens: 150 });
    expect(b.usage.get("principal:alice")).toMatchObject({ tokens: 150, reserved: { tokens: 0 }, open: 0 });
    expect(b.check(keys, { reserve: { tokens: 600 }, depth: 1, now: 0 })).toBeUndefined();
  });

  it("counts provisional charges, so decisions made before their events are stored cannot all fit", () => {
    const b = new Budgets();
    b.setLimits("agent", "worker", { toolCalls: 2 });
    const keys = budgetKeys("worker", "alice", TRACE);
    const charge = { keys, reserve: { toolCalls: 1 }, open: true };
    b.hold(charge);
    b.hold(charge);
    expect(b.check(keys, { reserve: { toolCalls: 1 }, depth: 1, now: 0 })?.code).toBe(ErrorCode.BudgetExceeded);
    b.release(charge);
    expect(b.check(keys, { reserve: { toolCalls: 1 }, depth: 1, now: 0 })).toBeUndefined();
    b.release(charge);
    expect(b.provisional.size).toBe(0);
  });

  it("limits messages in a rolling minute, concurrency, pending approvals and depth", () => {
    const b = new Budgets();
    b.setLimits("agent", "chatty", { messagesPerMinute: 2, concurrent: 1, pendingApprovals: 1, depth: 3 });
    const keys = budgetKeys("chatty", "alice", TRACE);
    b.onMessage("chatty", "alice", TRACE, 1_000, false);
    b.onMessage("chatty", "alice", TRACE, 2_000, true);
    expect(b.check(keys, { message: true, depth: 1, now: 3_000 })?.message).toMatch(/2 of 2 messages in the last minute/);
    expect(b.check(keys, { message: true, depth: 1, now: 61_500 })).toBeUndefined();
    expect(b.check(keys, { open: true, depth: 1, now: 3_000 })?.message).toMatch(/outstanding at once/);
    b.onRequestClosed("chatty", "alice", TRACE);
    expect(b.check(keys, { open: true, depth: 1, now: 3_000 })).toBeUndefined();
    b.onApprovalOpened(keys);
    expect(b.check(keys, { approval: true, depth: 1, now: 3_000 })?.message).toMatch(/approvals waiting/);
    expect(b.check(keys, { depth: 4, now: 3_000 })?.message).toMatch(/causal depth 4 is over the 3 hops/);
  });

  it("applies the trace budget to every trace, and clearing a budget removes its limits", () => {
    const b = new Budgets();
    b.setLimits("trace", "*", { tokens: 10 });
    expect(b.check(budgetKeys("a", "p", "t1"), { reserve: { tokens: 11 }, depth: 0, now: 0 })?.message).toMatch(/trace t1/);
    b.setLimits("trace", "*", {});
    expect(b.check(budgetKeys("a", "p", "t1"), { reserve: { tokens: 11 }, depth: 0, now: 0 })).toBeUndefined();
  });
});
