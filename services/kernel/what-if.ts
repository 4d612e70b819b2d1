/**
 * Policy what-if: re-evaluates the decisions recorded in the log under a candidate policy set and
 * reports every one that would change. A pure fold over events: identities (and their groups) are
 * taken as they were when each decision was made. Decisions the kernel made itself (unknown
 * target, depth limit, timeouts: policy ids starting with `kernel:`) are not policy decisions and
 * are left out.
 */
import { EventType, type Decision, type IdentityKind, type LogEvent } from "../../src/protocol/mod.js";
import { authorize } from "./authority.js";
import type { CedarAction, Entity, PolicyEngine } from "./policy.js";

export interface ChangedDecision {
  seq: number;
  at: number;
  actor: string;
  action: CedarAction;
  resource: string;
  principal: string;
  was: Decision["effect"];
  now: Decision["effect"];
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

interface Known {
  kind: IdentityKind;
  groups: string[];
}

function entity(name: string, known: Known | undefined): Entity | undefined {
  if (!known) return undefined;
  return { type: known.kind === "agent" ? "Agent" : "Principal", name, groups: known.groups };
}

const ACTIONS: Record<string, CedarAction | undefined> = { send: "message.send", request: "message.request", reply: "message.reply" };

/** The decision request a recorded event was decided on, or undefined for non-policy events. */
function recorded(event: LogEvent): { actor: string; action: CedarAction; resource: string; principal: string; depth: number; decision: Decision } | undefined {
  switch (event.type) {
    case EventType.Message:
      return { actor: event.actor, action: event.kind === "send" ? "message.send" : "message.request", resource: event.to, principal: event.principal, depth: event.depth, decision: event.decision };
    case EventType.Reply:
      return { actor: event.actor, action: "message.reply", resource: event.to, principal: event.principal, depth: event.depth, decision: event.decision };
    case EventType.Denied: {
      const action = ACTIONS[event.op];
      if (!action || event.to === undefined) return undefined;
      return { actor: event.actor, action, resource: event.to, principal: event.principal, depth: event.depth, decision: event.decision };
    }
    default:
      return undefined;
  }
}

/** Re-evaluates every policy decision in `events` (in log order) after seq `since`. */
export function whatIf(events: Iterable<LogEvent>, candidate: PolicyEngine, since = 0): WhatIfReport {
  const identities = new Map<string, Known>();
  const report: WhatIfReport = { policySet: candidate.policySet.hash, evaluated: 0, unchanged: 0, changed: [], skipped: 0 };
  for (const event of events) {
    if (event.type === EventType.IdentityRegistered) {
      identities.set(event.name, { kind: event.kind, groups: event.groups });
      continue;
    }
    if (event.seq <= since) continue;
    const r = recorded(event);
    if (!r || r.decision.policies.some((p) => p.startsWith("kernel:"))) continue;
    const actor = entity(r.actor, identities.get(r.actor));
    const resource = entity(r.resource, identities.get(r.resource));
    if (!actor || !resource) {
      report.skipped += 1;
      continue;
    }
    const onBehalfOf = r.principal === r.actor ? undefined : entity(r.principal, identities.get(r.principal));
    const now = authorize(candidate, { actor, action: r.action, resource, onBehalfOf, principal: r.principal, depth: r.depth }).decision;
    report.evaluated += 1;
    if (now.effect === r.decision.effect) {
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
      was: r.decision.effect,
      now: now.effect,
      policies: now.errors && now.errors.length > 0 ? now.errors : now.policies,
    });
  }
  return report;
}
