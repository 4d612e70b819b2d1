/**
 * Policy what-if: re-evaluates the decisions recorded in the log under a candidate policy set and
 * reports every one that would change. A pure fold over events: identities (and their groups) are
 * taken as they were when each decision was made. Decisions the kernel made itself (unknown
 * target, depth limit, timeouts: policy ids starting with `kernel:`) are not policy decisions and
 * are left out.
 */
import { EventType, type Decision, type IdentityKind, type LogEvent } from "../../src/protocol/mod.js";
import { authorize } from "./authority.js";
import { namespaceEntity } from "./decide.js";
import { MEMORY_LOGGED_WRITE_OPS } from "../../src/memory/ops.js";
import type { CedarAction, Entity, PolicyEngine } from "./policy.js";

export interface ChangedDecision {
  seq: number;
  at: number;
  actor: string;
  action: CedarAction;
  resource: string;
  principal: string;
  was: Verdict;
  now: Verdict;
  /** Policies that determined the candidate decision (or its errors). */
  policies: string[];
}

export interface WhatIfReport {
  /** Candidate policy set hash. */
  policySet: string;
  evaluated: number;
  unchanged: number;
  changed: ChangedDecision[];
  /** Recorded decisions that could not be re-evaluated (an identity unknown at the time). */
  skipped: number;
}

/** A decision as what-if compares them: a hold is its own outcome. */
export type Verdict = Decision["effect"] | "hold";

interface Known {
  kind: IdentityKind;
  groups: string[];
}

function entity(name: string, known: Known | undefined): Entity | undefined {
  if (!known) return undefined;
  return { type: known.kind === "agent" ? "Agent" : "Principal", name, groups: known.groups };
}

const ACTIONS: Record<string, CedarAction | undefined> = {
  send: "message.send",
  request: "message.request",
  reply: "message.reply",
  llm: "llm.complete",
  tool: "tool.call",
};
const EFFECT_ACTIONS: Record<string, CedarAction> = { llm: "llm.complete", tool: "tool.call" };
const MEMORY_WRITES = MEMORY_LOGGED_WRITE_OPS;

interface Recorded {
  actor: string;
  action: CedarAction;
  resource: string;
  principal: string;
  depth: number;
  labels: string[];
  decision: Decision;
  /** The recorded decision was a hold (allowed by a policy that asked for a human). */
  held?: boolean;
}

/** The decision request a recorded event was decided on, or undefined for non-policy events. */
function recorded(event: LogEvent): Recorded | undefined {
  const labels = "labels" in event && event.labels ? event.labels : [];
  switch (event.type) {
    case EventType.Message:
      return { actor: event.actor, action: event.kind === "send" ? "message.send" : "message.request", resource: event.to, principal: event.principal, depth: event.depth, labels, decision: event.decision };
    case EventType.Reply:
      return { actor: event.actor, action: "message.reply", resource: event.to, principal: event.principal, depth: event.depth, labels, decision: event.decision };
    case EventType.Denied: {
      const action = ACTIONS[event.op];
      if (!action || event.to === undefined) return undefined;
      return { actor: event.actor, action, resource: event.to, principal: event.principal, depth: event.depth, labels, decision: event.decision };
    }
    case EventType.EffectStarted: {
      // A released hold was decided by a human, not by the policies alone.
      if (event.approval !== undefined) return undefined;
      const action = event.kind === "mem" ? (MEMORY_WRITES.has(event.op) ? "memory.write" : "memory.read") : EFFECT_ACTIONS[event.kind];
      if (!action) return undefined;
      return { actor: event.actor, action, resource: event.target, principal: event.principal, depth: event.depth, labels, decision: event.decision };
    }
    case EventType.ApprovalRequested: {
      const action = ACTIONS[event.op];
      if (!action || event.request.to === undefined) return undefined;
      return { actor: event.actor, action, resource: event.request.to, principal: event.principal, depth: event.depth, labels, decision: event.decision, held: true };
    }
    default:
      return undefined;
  }
}

/** Re-evaluates every policy decision in `events` (in log order) after seq `since`. */
export function whatIf(events: Iterable<LogEvent>, candidate: PolicyEngine, since = 0): WhatIfReport {
  const identities = new Map<string, Known>();
  const tools = new Map<string, { effect: string; groups: string[] }>();
  const report: WhatIfReport = { policySet: candidate.policySet.hash, evaluated: 0, unchanged: 0, changed: [], skipped: 0 };
  for (const event of events) {
    if (event.type === EventType.IdentityRegistered) {
      identities.set(event.name, { kind: event.kind, groups: event.groups });
      continue;
    }
    if (event.type === EventType.ToolRegistered) {
      tools.set(event.manifest.name, { effect: event.manifest.effect, groups: event.groups ?? [] });
      continue;
    }
    if (event.seq <= since) continue;
    const r = recorded(event);
    if (!r || r.decision.policies.some((p) => p.startsWith("kernel:"))) continue;
    const actor = entity(r.actor, identities.get(r.actor));
    const resource = resourceOf(r, identities, tools);
    if (!actor || !resource) {
      report.skipped += 1;
      continue;
    }
    const onBehalfOf = r.principal === r.actor ? undefined : entity(r.principal, identities.get(r.principal));
    const now = authorize(candidate, { actor, action: r.action, resource, onBehalfOf, principal: r.principal, depth: r.depth, labels: r.labels, at: event.at }).decision;
    report.evaluated += 1;
    const was: Verdict = r.held ? "hold" : r.decision.effect;
    const verdict: Verdict = now.effect === "allow" && candidate.holdReason(now) !== undefined ? "hold" : now.effect;
    if (verdict === was) {
      report.unchanged += 1;
      continue;
    }
    report.changed.push({
      seq: event.seq,
      at: event.at,
      actor: r.actor,
      action: r.action,
      resource: r.resource,
      principal: r.principal,
      was,
      now: verdict,
      policies: now.errors && now.errors.length > 0 ? now.errors : now.policies,
    });
  }
  return report;
}

function resourceOf(r: Recorded, identities: Map<string, Known>, tools: Map<string, { effect: string; groups: string[] }>): Entity | undefined {
  switch (r.action) {
    case "llm.complete":
      return { type: "Model", name: r.resource, groups: [] };
    case "tool.call": {
      const tool = tools.get(r.resource);
      return tool ? { type: "Tool", name: r.resource, groups: tool.groups, attrs: { effect: tool.effect } } : undefined;
    }
    case "memory.read":
    case "memory.write":
      return namespaceEntity(r.resource);
    default:
      return entity(r.resource, identities.get(r.resource));
  }
}
