/**
 * The kernel's decisions as a pure function of (syscall, state, policy): what to write to the
 * log and what to answer. No I/O here; kernel.ts executes the outcome. This is what makes the
 * decision path testable, replayable and cheap to re-evaluate under another policy.
 */
import { createHash } from "node:crypto";
import {
  AgentState,
  EVENT_VERSION,
  ErrorCode,
  EventType,
  MaxwellError,
  ServiceName,
  SyscallOp,
  ToolEffect,
  isName,
  subjects,
  type ApprovalDecidedEvent,
  type ApprovalRequestedEvent,
  type Decision,
  type EffectKind,
  type EffectStartedEvent,
  type Labels,
  type Reservation,
  type DeniedEvent,
  type EventId,
  type LogEvent,
  type MessageEvent,
  type Observation,
  type PendingEvent,
  type RecordEvent,
  type ReplyEvent,
  type Scope,
  type SyscallReply,
  type SyscallRequest,
  type SyscallResult,
  type TraceId,
  type WireError,
} from "../../src/protocol/mod.js";
import { canonicalJson, compileArgsValidator } from "../../src/protocol/manifest.js";
import { costMicroUsd, priceOf } from "../../src/protocol/prices.js";
import { parseCompleteArgs } from "../../src/protocol/llm-params.js";
import { authorize } from "./authority.js";
import { budgetKeys, type Charge } from "./budget.js";
import type { CedarAction, Entity, PolicyEngine } from "./policy.js";
import { labelsOf, syscallKey, type Identity, type KernelState } from "./state.js";

/** Names no identity may take: they appear as actors of kernel-made events. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(["kernel", "admin", "system", "maxwell"]);
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Causal hops after which the kernel refuses to go deeper (stops agent ping-pong loops). */
export const MAX_DEPTH = 64;

/** How long a held action waits for a human before it expires (= deny). */
export const DEFAULT_APPROVAL_TTL_MS = 15 * 60_000;

/** What the memory service's argument rules tell the kernel (services/memory/ops.ts). */
export interface MemoryRules {
  /** Validates args for `op`; throws a bad_request MaxwellError. */
  parse(op: string, args: unknown): unknown;
  /** The namespaces a call touches (a search may read several). */
  namespaces(op: string, target: string, args: unknown): string[];
  isWrite(op: string): boolean;
  isRead(op: string): boolean;
}

export interface SyscallInput {
  actor: string;
  op: SyscallOp;
  request: SyscallRequest;
  now: number;
  /** Trace id from an incoming traceparent header, used only when nothing causes the syscall. */
  headerTrace?: TraceId;
  newId: () => EventId;
  newTrace: () => TraceId;
  /** Set when the kernel carries out a held syscall a human approved: the approval's id. */
  approved?: EventId;
  approvalTtlMs?: number;
  memory?: MemoryRules;
}

/** Where an allowed effect goes: the service, its operation, and what the call must carry. */
export interface EffectCall {
  service: string;
  op: string;
  /** Tools: the pinned manifest hash and the secret references to inject. */
  manifest?: string;
  secrets?: Record<string, string>;
  /** Tools: the effect class (external results are labeled untrusted). */
  toolEffect?: string;
}

export type Outcome =
  | { kind: "repeat"; reply: SyscallReply; /** For effects: the outcome to read from the log. */ completedSeq?: number }
  | {
      kind: "append";
      subject: string;
      msgId: string;
      event: PendingEvent;
      /** The answer once the event is stored. */
      answer: (stored: LogEvent) => SyscallReply;
      /** Budget charge held until the event is stored. */
      charge?: Charge;
      /** An approval to carry out once this decision is stored. */
      release?: EventId;
    }
  | {
      kind: "effect";
      subject: string;
      msgId: string;
      event: PendingOf<EffectStartedEvent>;
      charge?: Charge;
      call: EffectCall;
    };

/** One kind of event before the appender assigns its place in the chain. */
export type PendingOf<E extends LogEvent> = Omit<E, "seq" | "prev">;

function entity(identity: Identity): Entity {
  return { type: identity.kind === "agent" ? "Agent" : "Principal", name: identity.name, groups: identity.groups };
}

/** A memory namespace `<kind>:<name>` as a Cedar entity. */
export function namespaceEntity(ns: string): Entity {
  const colon = ns.indexOf(":");
  return { type: "MemoryNamespace", name: ns, groups: [], attrs: { kind: ns.slice(0, colon), owner: ns.slice(colon + 1) } };
}

/** The digest an approver must name: sha256 over actor, op and the canonical request. */
export function approvalDigest(actor: string, op: string, request: SyscallRequest): string {
  const { observed: _observed, ...held } = request;
  return createHash("sha256").update(canonicalJson({ actor, op, request: held })).digest("hex");
}

/** Rough prompt size in tokens (4 characters each), for a reservation that must not under-count badly. */
function estimateTokens(args: Record<string, unknown>): number {
  let chars = 0;
  for (const k of ["system", "messages", "tools"]) if (args[k] !== undefined) chars += JSON.stringify(args[k]).length;
  return Math.ceil(chars / 4);
}

/** What a model call reserves: its prompt estimate plus max_tokens, and their price. */
export function llmReservation(model: string, args: Record<string, unknown>): { reserve: Reservation; priced: boolean } {
  const input = estimateTokens(args);
  const output = Number(args["max_tokens"]);
  const microUsd = costMicroUsd({ model, inputTokens: input, outputTokens: output });
  const reserve: Reservation = { tokens: input + output };
  if (microUsd !== undefined) reserve.microUsd = microUsd;
  return { reserve, priced: priceOf(model) !== undefined };
}

/** The principal's identity as a Cedar entity, when the actor works on someone else's behalf. */
function behalfOf(state: KernelState, principal: string, actor: string): Entity | undefined {
  if (principal === actor) return undefined;
  const identity = state.identities.get(principal);
  return identity ? entity(identity) : undefined;
}

/** Whether `action` at `now` is within a delegated scope; the error when it is not. */
function checkScope(scope: Scope | undefined, action: CedarAction, now: number): WireError | undefined {
  if (!scope) return undefined;
  if (scope.expiresAt !== undefined && now > scope.expiresAt) {
    return { code: ErrorCode.Forbidden, message: `the scope delegated for this work expired at ${new Date(scope.expiresAt).toISOString()}` };
  }
  if (scope.actions !== undefined && !scope.actions.includes(action)) {
    return { code: ErrorCode.Forbidden, message: `${action} is outside the scope delegated for this work (${scope.actions.join(", ") || "no actions"})` };
  }
  return undefined;
}

/**
 * The scope a new message hands on: the delegated one, narrowed by what the sender asks. Asking
 * for an action outside the delegated ones, or a later expiry, would widen it: refused.
 */
function narrow(delegated: Scope | undefined, asked: Scope | undefined): { scope: Scope | undefined } | { error: WireError } {
  if (!asked) return { scope: delegated };
  const scope: Scope = {};
  if (asked.actions !== undefined) {
    const extra = delegated?.actions === undefined ? [] : asked.actions.filter((a) => !delegated.actions?.includes(a));
    if (extra.length > 0) return { error: { code: ErrorCode.Forbidden, message: `cannot delegate ${extra.join(", ")}: it would widen the scope delegated to you (${delegated?.actions?.join(", ")})` } };
    scope.actions = asked.actions;
  } else if (delegated?.actions !== undefined) scope.actions = delegated.actions;
  if (asked.expiresAt !== undefined) {
    if (delegated?.expiresAt !== undefined && asked.expiresAt > delegated.expiresAt) {
      return { error: { code: ErrorCode.Forbidden, message: `cannot delegate until ${new Date(asked.expiresAt).toISOString()}: the scope delegated to you expires at ${new Date(delegated.expiresAt).toISOString()}` } };
    }
    scope.expiresAt = asked.expiresAt;
  } else if (delegated?.expiresAt !== undefined) scope.expiresAt = delegated.expiresAt;
  return { scope };
}

function denial(decision: Decision, actor: string, action: string, target: string, principal?: string): WireError {
  if (principal !== undefined) {
    return {
      code: ErrorCode.Forbidden,
      message: `denied: ${actor} acts for principal '${principal}', who may not ${action} ${target} (an agent's authority is its own grants and its principal's)`,
      policies: decision.policies,
    };
  }
  if (decision.errors && decision.errors.length > 0) {
    return {
      code: ErrorCode.Forbidden,
      message: `denied: policy evaluation failed for ${actor} ${action} ${target} (${decision.errors.join("; ")}); errors deny`,
      policies: decision.policies,
    };
  }
  if (decision.policies.length === 0) {
    return { code: ErrorCode.Forbidden, message: `denied: no policy permits ${actor} to ${action} ${target} (default deny)`, policies: [] };
  }
  return { code: ErrorCode.Forbidden, message: `denied by policy ${decision.policies.join(", ")}: ${actor} may not ${action} ${target}`, policies: decision.policies };
}

function ok(stored: LogEvent): SyscallReply {
  const result: SyscallResult = { event: stored.id, seq: stored.seq };
  if ("trace" in stored) result.trace = stored.trace;
  if ("labels" in stored && stored.labels !== undefined && stored.labels.length > 0) result.labels = stored.labels;
  return { ok: true, result };
}

const CEDAR_ACTIONS: Record<string, CedarAction | undefined> = {
  send: "message.send",
  request: "message.request",
  llm: "llm.complete",
  tool: "tool.call",
};

/**
 * Adds the optional causal fields to an event built as one object literal. Events are built that
 * way, not with object spreads, because this is the kernel's hot path: spread copies are several
 * times slower to build, to complete with seq and prev, and to encode.
 */
function withCause<E extends { causation?: EventId; observed?: Observation[] }>(event: E, request: SyscallRequest): E {
  if (request.causation !== undefined) event.causation = request.causation;
  if (request.observed !== undefined && request.observed.length > 0) event.observed = request.observed;
  return event;
}

/**
 * Decides one syscall. Throws a MaxwellError for input that cannot be attributed to a valid
 * request (the caller records it as a rejection); returns the outcome otherwise.
 */
export function decideSyscall(state: KernelState, policy: PolicyEngine, input: SyscallInput): Outcome {
  const { actor, op, request, now } = input;
  const self = state.identities.get(actor);
  if (!self) throw new MaxwellError(ErrorCode.Unauthorized, `actor '${actor}' is not a registered identity`);

  const key = syscallKey(actor, request.id);
  const seen = state.syscalls.get(key);
  if (seen && !(seen.held !== undefined && seen.held === input.approved)) {
    if (seen.error) return { kind: "repeat", reply: { ok: false, error: seen.error } };
    if (seen.held !== undefined) {
      const approval = state.approvals.get(seen.held);
      return { kind: "repeat", reply: { ok: false, error: heldError(seen.held, approval?.reason ?? "held", approval?.expiresAt ?? now) } };
    }
    const result: SyscallResult = { event: seen.event, seq: seen.seq, repeated: true };
    const reply = state.deliveries.get(seen.event)?.reply;
    if (reply) result.reply = reply;
    const outcome: Outcome = { kind: "repeat", reply: { ok: true, result } };
    if (seen.completed !== undefined) outcome.completedSeq = seen.completed;
    return outcome;
  }

  const id = input.newId();
  // A released hold is a second write for the same syscall id: it needs its own dedupe key.
  const msgId = input.approved === undefined ? `${actor}:${request.id}` : `${actor}:${request.id}:approved`;

  // Whose behalf, which trace, how deep: inherited from the causing delivery, never from the payload.
  let principal = actor;
  let trace: TraceId | undefined = input.headerTrace;
  let depth = 0;
  let delegated: Scope | undefined;
  if (request.causation !== undefined) {
    const cause = state.deliveries.get(request.causation);
    if (!cause) throw new MaxwellError(ErrorCode.NotFound, `causation event ${request.causation} is unknown to the kernel`);
    if (cause.to !== actor) {
      throw new MaxwellError(ErrorCode.Forbidden, `causation event ${request.causation} was not delivered to ${actor}`);
    }
    principal = cause.principal;
    trace = cause.trace;
    depth = cause.depth + 1;
    delegated = cause.scope;
  }
  trace ??= input.newTrace();

  const labels = self.kind === "agent" || request.labels !== undefined ? labelsOf(state, actor, request.causation, request.labels) : [];
  const keys = budgetKeys(actor, principal, trace);
  const deny = (decision: Decision, error: WireError, to?: string): Outcome => {
    const event = withCause<PendingOf<DeniedEvent>>(
      { v: EVENT_VERSION, id, at: now, actor, principal, syscall: request.id, trace, depth, type: EventType.Denied, op, decision, error },
      request,
    );
    if (to !== undefined) event.to = to;
    if (op !== SyscallOp.Mem) event.request = request;
    return { kind: "append", subject: subjects.logDecision(actor), msgId, event, answer: () => ({ ok: false, error }) };
  };
  const kernelDecision = (reason: string): Decision => ({ effect: "deny", policies: [`kernel:${reason}`], policySet: policy.policySet.hash });
  /** Holds the syscall for a human when a `@hold` policy permitted it (unless a human already approved). */
  const holdIfAsked = (decision: Decision, to: string): Outcome | undefined => {
    if (input.approved !== undefined) return undefined;
    const reason = policy.holdReason(decision);
    if (reason === undefined) return undefined;
    const overBudget = state.budgets.check(keys, { approval: true, depth, now });
    if (overBudget) return deny(kernelDecision("approval-budget"), overBudget, to);
    const expiresAt = now + (input.approvalTtlMs ?? DEFAULT_APPROVAL_TTL_MS);
    const event = withCause<PendingOf<ApprovalRequestedEvent>>(
      {
        v: EVENT_VERSION,
        id,
        at: now,
        actor,
        principal,
        syscall: request.id,
        trace,
        depth,
        type: EventType.ApprovalRequested,
        op,
        request,
        digest: approvalDigest(actor, op, request),
        reason,
        decision,
        labels,
        expiresAt,
      },
      request,
    );
    return {
      kind: "append",
      subject: subjects.logApproval(actor),
      msgId,
      event,
      answer: () => ({ ok: false, error: heldError(id, reason, expiresAt) }),
      charge: { keys, approval: true },
    };
  };

  // Operator control comes before any policy: it holds whatever the policies say.
  if (self.control === AgentState.Killed) {
    return deny(kernelDecision("killed"), { code: ErrorCode.Forbidden, message: `agent '${actor}' was killed by an operator` });
  }
  if (self.control === AgentState.Paused) {
    return deny(kernelDecision("paused"), { code: ErrorCode.Unavailable, message: `agent '${actor}' is paused by an operator: nothing is accepted from it until it is resumed (its queued work is kept)` });
  }
  if (self.control === AgentState.Quarantined && op !== SyscallOp.Record) {
    return deny(kernelDecision("quarantined"), { code: ErrorCode.Forbidden, message: `agent '${actor}' is quarantined by an operator: it may run, but none of its actions is allowed` });
  }

  /** A principal approves or refuses a held action. */
  function decideApproval(): Outcome {
    const body = request.body as Record<string, unknown> | null | undefined;
    if (typeof body !== "object" || body === null) throw new MaxwellError(ErrorCode.BadRequest, "approve needs a body { approval, digest, verdict: 'approve' | 'deny', reason? }");
    const approvalId = body["approval"];
    const digest = body["digest"];
    const verdict = body["verdict"];
    if (typeof approvalId !== "string" || typeof digest !== "string" || (verdict !== "approve" && verdict !== "deny")) {
      throw new MaxwellError(ErrorCode.BadRequest, "approve needs 'approval' (the held event id), 'digest' (of the held request) and 'verdict' ('approve' or 'deny')");
    }
    const reason = typeof body["reason"] === "string" ? body["reason"].slice(0, 500) : undefined;
    const approval = state.approvals.get(approvalId as EventId);
    const held = approval?.actor;
    if (self?.kind !== "principal") {
      return deny(kernelDecision("not-a-principal"), { code: ErrorCode.Forbidden, message: `only principals can decide held actions; '${actor}' is an agent` }, held);
    }
    if (!approval) return deny(kernelDecision("unknown-approval"), { code: ErrorCode.NotFound, message: `no held action ${approvalId} is known to the kernel` });
    if (approval.status !== "pending") {
      return deny(kernelDecision("approval-used"), { code: ErrorCode.Conflict, message: `held action ${approvalId} was already ${approval.status}${approval.decidedBy ? ` by ${approval.decidedBy}` : ""}: an approval is single-use` }, held);
    }
    if (now > approval.expiresAt) {
      return deny(kernelDecision("approval-expired"), { code: ErrorCode.Conflict, message: `held action ${approvalId} expired at ${new Date(approval.expiresAt).toISOString()}` }, held);
    }
    if (digest !== approval.digest) {
      return deny(kernelDecision("approval-digest"), { code: ErrorCode.Conflict, message: `digest ${digest.slice(0, 16)}… does not match the held request (${approval.digest.slice(0, 16)}…): the decision must name exactly the request that is held` }, held);
    }
    const agent = state.identities.get(approval.actor);
    if (!agent) return deny(kernelDecision("unknown-target"), { code: ErrorCode.NotFound, message: `agent '${approval.actor}' is not registered` }, held);
    const { decision } = authorize(policy, { actor: entity(self), action: "approval.decide", resource: entity(agent), onBehalfOf: undefined, principal: actor, depth: 0, labels: approval.labels, at: now });
    if (decision.effect !== "allow") return deny(decision, denial(decision, actor, "approval.decide", approval.actor), held);
    const event: PendingOf<ApprovalDecidedEvent> = { v: EVENT_VERSION, id, at: now, type: EventType.ApprovalDecided, approval: approval.id, verdict, by: actor };
    if (reason !== undefined) event.reason = reason;
    if (body["endorse"] === true) event.endorse = true;
    const outcome: Outcome = { kind: "append", subject: subjects.logApproval(approval.actor), msgId, event, answer: ok };
    if (verdict === "approve") outcome.release = approval.id;
    return outcome;
  }

  switch (op) {
    case SyscallOp.Send:
    case SyscallOp.Request: {
      const to = request.to;
      if (to === undefined) throw new MaxwellError(ErrorCode.BadRequest, `${op} needs a 'to' field naming the target agent`);
      if (request.inReplyTo !== undefined || request.error !== undefined) {
        throw new MaxwellError(ErrorCode.BadRequest, `'inReplyTo' and 'error' belong to reply, not ${op}`);
      }
      const target = state.identities.get(to);
      if (!target || target.kind !== "agent") {
        return deny(kernelDecision("unknown-target"), { code: ErrorCode.NotFound, message: `no agent named '${to}' is registered` }, to);
      }
      if (target.control === AgentState.Killed) {
        return deny(kernelDecision("killed-target"), { code: ErrorCode.NotFound, message: `agent '${to}' was killed by an operator` }, to);
      }
      if (op === SyscallOp.Request && self.kind !== "agent") {
        throw new MaxwellError(ErrorCode.BadRequest, "only agents can make requests (principals send work and read results from the log)");
      }
      if (depth > MAX_DEPTH) {
        return deny(kernelDecision("max-depth"), {
          code: ErrorCode.BudgetExceeded,
          message: `causal depth ${depth} exceeds the limit of ${MAX_DEPTH} hops (a message loop?)`,
        }, to);
      }
      const action: CedarAction = op === SyscallOp.Send ? "message.send" : "message.request";
      const outOfScope = checkScope(delegated, action, now);
      if (outOfScope) return deny(kernelDecision("scope"), outOfScope, to);
      const narrowed = narrow(delegated, request.scope);
      if ("error" in narrowed) return deny(kernelDecision("scope-widening"), narrowed.error, to);
      const overBudget = state.budgets.check(keys, { message: true, open: op === SyscallOp.Request, depth, now });
      if (overBudget) return deny(kernelDecision("budget"), overBudget, to);
      const { decision, denier } = authorize(policy, { actor: entity(self), action, resource: entity(target), onBehalfOf: behalfOf(state, principal, actor), principal, depth, labels, at: now });
      if (decision.effect !== "allow") return deny(decision, denial(decision, actor, action, to, denier === "principal" ? principal : undefined), to);
      const held = holdIfAsked(decision, to);
      if (held) return held;
      const event = withCause<PendingOf<MessageEvent>>(
        { v: EVENT_VERSION, id, at: now, actor, principal, syscall: request.id, trace, depth, type: EventType.Message, kind: op, to, body: request.body ?? null, decision },
        request,
      );
      if (op === SyscallOp.Request) event.deadline = now + (request.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
      if (narrowed.scope !== undefined) event.scope = narrowed.scope;
      const released = endorsed(state, input.approved, labels);
      if (released.length > 0) event.labels = released;
      const sent: Outcome = { kind: "append", subject: subjects.logInbox(to), msgId, event, answer: ok };
      // Only work some budget limits needs holding as provisional (the common case: none does).
      if (state.budgets.limits.size > 0) sent.charge = { keys, message: true, open: op === SyscallOp.Request };
      return sent;
    }
    case SyscallOp.Reply: {
      const inReplyTo = request.inReplyTo;
      if (inReplyTo === undefined) throw new MaxwellError(ErrorCode.BadRequest, "reply needs 'inReplyTo': the id of the request being answered");
      if (request.to !== undefined) throw new MaxwellError(ErrorCode.BadRequest, "reply goes to whoever made the request: leave 'to' out");
      const req = state.deliveries.get(inReplyTo);
      if (!req || req.kind !== "request") {
        return deny(kernelDecision("unknown-request"), { code: ErrorCode.NotFound, message: `no request ${inReplyTo} is known to the kernel` });
      }
      if (req.to !== actor) {
        return deny(kernelDecision("not-addressee"), { code: ErrorCode.Forbidden, message: `request ${inReplyTo} was not delivered to ${actor}` }, req.actor);
      }
      if (req.reply) {
        const why = req.reply.error?.code === ErrorCode.Timeout ? "it already timed out" : "it was already answered";
        return deny(kernelDecision("already-answered"), { code: ErrorCode.Conflict, message: `cannot answer request ${inReplyTo}: ${why}` }, req.actor);
      }
      const requester = state.identities.get(req.actor);
      if (!requester) return deny(kernelDecision("unknown-target"), { code: ErrorCode.NotFound, message: `requester '${req.actor}' is not registered` }, req.actor);
      // A reply continues the request's causal chain, whatever the replier claims as causation.
      const replyDepth = req.depth + 1;
      // It carries what the replier saw while handling the request.
      const replyLabels = labelsOf(state, actor, inReplyTo, request.labels);
      // Answering is part of the request itself, so a delegated scope does not restrict it.
      const { decision, denier } = authorize(policy, {
        actor: entity(self),
        action: "message.reply",
        resource: entity(requester),
        onBehalfOf: behalfOf(state, req.principal, actor),
        principal: req.principal,
        depth: replyDepth,
        labels: replyLabels,
        at: now,
      });
      if (decision.effect !== "allow") return deny(decision, denial(decision, actor, "message.reply", req.actor, denier === "principal" ? req.principal : undefined), req.actor);
      const event = withCause<PendingOf<ReplyEvent>>(
        { v: EVENT_VERSION, id, at: now, actor, principal: req.principal, syscall: request.id, trace: req.trace, depth: replyDepth, type: EventType.Reply, to: req.actor, inReplyTo, decision },
        request,
      );
      if (request.error !== undefined) event.error = request.error;
      else event.body = request.body ?? null;
      if (replyLabels.length > 0) event.labels = replyLabels;
      return { kind: "append", subject: subjects.logReplies(req.actor), msgId, event, answer: ok };
    }
    case SyscallOp.Llm:
    case SyscallOp.Tool:
    case SyscallOp.Mem: {
      const target = request.to;
      if (target === undefined) throw new MaxwellError(ErrorCode.BadRequest, `${op} needs a 'to' field naming the ${op === SyscallOp.Llm ? "model" : op === SyscallOp.Tool ? "tool" : "memory namespace"}`);
      if (request.inReplyTo !== undefined || request.error !== undefined || request.scope !== undefined) {
        throw new MaxwellError(ErrorCode.BadRequest, `'inReplyTo', 'error' and 'scope' do not apply to ${op}`);
      }
      if (depth > MAX_DEPTH) {
        return deny(kernelDecision("max-depth"), { code: ErrorCode.BudgetExceeded, message: `causal depth ${depth} exceeds the limit of ${MAX_DEPTH} hops` }, target);
      }
      const plan = planEffect(state, op, target, request.body, input.memory);
      if ("error" in plan) return deny(kernelDecision(plan.reason), plan.error, target);
      for (const action of new Set(plan.checks.map((c) => c.action))) {
        const outOfScope = checkScope(delegated, action, now);
        if (outOfScope) return deny(kernelDecision("scope"), outOfScope, target);
      }
      if (plan.kind === "llm" && !plan.priced && state.budgets.check(keys, { reserve: { microUsd: 1 }, depth, now }) !== undefined) {
        return deny(kernelDecision("unpriced-model"), { code: ErrorCode.BudgetExceeded, message: `model '${target}' has no price, and a money budget applies to this work` }, target);
      }
      const overBudget = state.budgets.check(keys, { reserve: plan.reserve, open: true, depth, now });
      if (overBudget) return deny(kernelDecision("budget"), overBudget, target);
      let decision: Decision | undefined;
      for (const check of plan.checks) {
        const r = authorize(policy, { actor: entity(self), action: check.action, resource: check.resource, onBehalfOf: behalfOf(state, principal, actor), principal, depth, labels, at: now });
        if (r.decision.effect !== "allow") return deny(r.decision, denial(r.decision, actor, check.action, check.resource.name, r.denier === "principal" ? principal : undefined), target);
        decision = decision ? { ...decision, policies: [...new Set([...decision.policies, ...r.decision.policies])] } : r.decision;
      }
      if (!decision) throw new MaxwellError(ErrorCode.Internal, `no authorization check planned for ${op}`);
      const held = holdIfAsked(decision, target);
      if (held) return held;
      const event = withCause<PendingOf<EffectStartedEvent>>(
        {
          v: EVENT_VERSION,
          id,
          at: now,
          actor,
          principal,
          syscall: request.id,
          trace,
          depth,
          type: EventType.EffectStarted,
          kind: plan.kind,
          op: plan.call.op,
          target,
          args: plan.args,
          decision,
          labels: endorsed(state, input.approved, labels),
        },
        request,
      );
      if (plan.reserve) event.reserved = plan.reserve;
      if (input.approved !== undefined) event.approval = input.approved;
      const effect: Outcome = { kind: "effect", subject: subjects.logEffect(actor), msgId, event, call: plan.call };
      if (state.budgets.limits.size > 0) {
        effect.charge = { keys, open: true };
        if (plan.reserve) effect.charge.reserve = plan.reserve;
      }
      return effect;
    }
    case SyscallOp.Approve:
      return decideApproval();
    case SyscallOp.Ack:
      throw new MaxwellError(ErrorCode.BadRequest, "ack is transport-level and handled before decisions");
    case SyscallOp.Record: {
      const observed = request.observed;
      if (!observed || observed.length === 0) {
        throw new MaxwellError(ErrorCode.BadRequest, "record needs a non-empty 'observed' list");
      }
      const event: PendingOf<RecordEvent> = { v: EVENT_VERSION, id, at: now, actor, principal, syscall: request.id, trace, depth, type: EventType.Record, observed };
      if (request.causation !== undefined) event.causation = request.causation;
      return { kind: "append", subject: subjects.logRecord(actor), msgId, event, answer: ok };
    }
  }
}

/**
 * The event the kernel writes when a request will get no answer: its deadline passed, or the
 * agent it was sent to was killed.
 */
export function timeoutReply(
  state: KernelState,
  requestId: EventId,
  now: number,
  newId: () => EventId,
  policySet: string,
  why: "timeout" | "killed" = "timeout",
): { subject: string; msgId: string; event: PendingEvent } | undefined {
  const req = state.deliveries.get(requestId);
  if (!req || req.kind !== "request" || req.reply) return undefined;
  const error =
    why === "timeout"
      ? { code: ErrorCode.Timeout, message: `request ${requestId} to ${req.to} got no reply by its deadline` }
      : { code: ErrorCode.Unavailable, message: `request ${requestId} will get no reply: agent '${req.to}' was killed by an operator` };
  return {
    subject: subjects.logReplies(req.actor),
    msgId: `kernel:${why}.${requestId}`,
    event: {
      v: EVENT_VERSION,
      id: newId(),
      at: now,
      type: EventType.Reply,
      actor: "kernel",
      principal: req.principal,
      syscall: `timeout.${requestId}:0` as SyscallRequest["id"],
      trace: req.trace,
      causation: requestId,
      depth: req.depth + 1,
      to: req.actor,
      inReplyTo: requestId,
      error,
      decision: { effect: "allow", policies: [`kernel:${why}`], policySet },
    },
  };
}

/** The answer to a held syscall: `held`, naming the approval and when it expires. */
export function heldError(approval: EventId, reason: string, expiresAt: number): WireError {
  return {
    code: ErrorCode.Held,
    message: `held for a human decision (${reason}): approval ${approval}, expires ${new Date(expiresAt).toISOString()}; decide with 'maxwell approve ${approval}' or 'maxwell deny ${approval}'`,
    detail: { approval, expiresAt },
  };
}

/** Labels of an action a human released: an endorsing approver vouches for its inputs. */
function endorsed(state: KernelState, approved: EventId | undefined, labels: Labels): Labels {
  if (approved === undefined || !state.approvals.get(approved)?.endorse) return labels;
  return labels.filter((l) => l !== "untrusted");
}

interface EffectPlan {
  kind: EffectKind;
  args: unknown;
  call: EffectCall;
  checks: { action: CedarAction; resource: Entity }[];
  reserve?: Reservation;
  /** llm: whether the model has a price (a money budget needs one). */
  priced?: boolean;
}

/** What an effect syscall asks for: the service call, the Cedar checks, the reservation. */
function planEffect(state: KernelState, op: SyscallOp, target: string, body: unknown, memory: MemoryRules | undefined): EffectPlan | { error: WireError; reason: string } {
  switch (op) {
    case SyscallOp.Llm: {
      if (!isName(target)) throw new MaxwellError(ErrorCode.BadRequest, `llm: invalid model name ${JSON.stringify(target)}`);
      const params = parseCompleteArgs(body, target) as unknown as Record<string, unknown>;
      const { reserve, priced } = llmReservation(target, params);
      return {
        kind: "llm",
        args: { ...params, model: target },
        call: { service: ServiceName.Llm, op: "complete" },
        checks: [{ action: "llm.complete", resource: { type: "Model", name: target, groups: [] } }],
        reserve,
        priced,
      };
    }
    case SyscallOp.Tool: {
      const tool = state.tools.get(target);
      if (!tool) return { error: { code: ErrorCode.NotFound, message: `no tool named '${target}' is registered` }, reason: "unknown-tool" };
      compileArgsValidator(tool.manifest)(body ?? {});
      const call: EffectCall = { service: tool.manifest.service ?? ServiceName.Tools, op: "call", manifest: tool.hash, toolEffect: tool.manifest.effect };
      if (tool.manifest.secrets) call.secrets = tool.manifest.secrets;
      return {
        kind: "tool",
        args: body ?? {},
        call,
        checks: [{ action: "tool.call", resource: { type: "Tool", name: target, groups: tool.groups, attrs: { effect: tool.manifest.effect } } }],
        reserve: { toolCalls: 1 },
      };
    }
    default: {
      if (!memory) return { error: { code: ErrorCode.Unavailable, message: "this kernel has no memory service configured" }, reason: "no-memory" };
      const b = body as Record<string, unknown> | null | undefined;
      const memOp = typeof b === "object" && b !== null ? b["op"] : undefined;
      if (typeof memOp !== "string" || !(memory.isRead(memOp) || memory.isWrite(memOp))) {
        throw new MaxwellError(ErrorCode.BadRequest, `mem needs a body { op, ... } with op one of the memory operations, not ${JSON.stringify(memOp)}`);
      }
      const { op: _op, ...args } = b as Record<string, unknown>;
      const parsed = memory.parse(memOp, args);
      const action: CedarAction = memory.isWrite(memOp) ? "memory.write" : "memory.read";
      const checks = memory.namespaces(memOp, target, parsed).map((ns) => ({ action, resource: namespaceEntity(ns) }));
      return { kind: "mem", args: parsed, call: { service: ServiceName.Memory, op: memOp }, checks };
    }
  }
}

/** The Cedar action a recorded syscall op was decided as (what-if), when it is a policy decision. */
export function cedarActionOf(op: string): CedarAction | undefined {
  return CEDAR_ACTIONS[op];
}

/** Tool effect classes that change the world (the default policy holds them on untrusted input). */
export const CONSEQUENTIAL_EFFECTS: readonly string[] = [ToolEffect.Write, ToolEffect.Destructive, ToolEffect.External];
