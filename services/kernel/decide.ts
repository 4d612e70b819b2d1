/**
 * The kernel's decisions as a pure function of (syscall, state, policy): what to write to the
 * log and what to answer. No I/O here; kernel.ts executes the outcome. This is what makes the
 * decision path testable, replayable and cheap to re-evaluate under another policy.
 */
import {
  AgentState,
  EVENT_VERSION,
  ErrorCode,
  EventType,
  MaxwellError,
  SyscallOp,
  subjects,
  type Decision,
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
import { authorize } from "./authority.js";
import type { CedarAction, Entity, PolicyEngine } from "./policy.js";
import { syscallKey, type Identity, type KernelState } from "./state.js";

/** Names no identity may take: they appear as actors of kernel-made events. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(["kernel", "admin", "system", "maxwell"]);
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Causal hops after which the kernel refuses to go deeper (stops agent ping-pong loops). */
export const MAX_DEPTH = 64;

export interface SyscallInput {
  actor: string;
  op: SyscallOp;
  request: SyscallRequest;
  now: number;
  /** Trace id from an incoming traceparent header, used only when nothing causes the syscall. */
  headerTrace?: TraceId;
  newId: () => EventId;
  newTrace: () => TraceId;
}

export type Outcome =
  | { kind: "repeat"; reply: SyscallReply }
  | {
      kind: "append";
      subject: string;
      msgId: string;
      event: PendingEvent;
      /** The answer once the event is stored. */
      answer: (stored: LogEvent) => SyscallReply;
    };

/** One kind of event before the appender assigns its place in the chain. */
type PendingOf<E extends LogEvent> = Omit<E, "seq" | "prev">;

function entity(identity: Identity): Entity {
  return { type: identity.kind === "agent" ? "Agent" : "Principal", name: identity.name, groups: identity.groups };
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
  return { ok: true, result };
}

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
  if (seen) {
    if (seen.error) return { kind: "repeat", reply: { ok: false, error: seen.error } };
    const result: SyscallResult = { event: seen.event, seq: seen.seq, repeated: true };
    const reply = state.deliveries.get(seen.event)?.reply;
    if (reply) result.reply = reply;
    return { kind: "repeat", reply: { ok: true, result } };
  }

  const id = input.newId();
  const msgId = `${actor}:${request.id}`;

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

  const deny = (decision: Decision, error: WireError, to?: string): Outcome => {
    const event = withCause<PendingOf<DeniedEvent>>(
      { v: EVENT_VERSION, id, at: now, actor, principal, syscall: request.id, trace, depth, type: EventType.Denied, op, decision, error },
      request,
    );
    if (to !== undefined) event.to = to;
    return { kind: "append", subject: subjects.logDecision(actor), msgId, event, answer: () => ({ ok: false, error }) };
  };
  const kernelDecision = (reason: string): Decision => ({ effect: "deny", policies: [`kernel:${reason}`], policySet: policy.policySet.hash });

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
      const { decision, denier } = authorize(policy, { actor: entity(self), action, resource: entity(target), onBehalfOf: behalfOf(state, principal, actor), principal, depth });
      if (decision.effect !== "allow") return deny(decision, denial(decision, actor, action, to, denier === "principal" ? principal : undefined), to);
      const event = withCause<PendingOf<MessageEvent>>(
        { v: EVENT_VERSION, id, at: now, actor, principal, syscall: request.id, trace, depth, type: EventType.Message, kind: op, to, body: request.body ?? null, decision },
        request,
      );
      if (op === SyscallOp.Request) event.deadline = now + (request.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
      if (narrowed.scope !== undefined) event.scope = narrowed.scope;
      return { kind: "append", subject: subjects.logInbox(to), msgId, event, answer: ok };
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
      // Answering is part of the request itself, so a delegated scope does not restrict it.
      const { decision, denier } = authorize(policy, {
        actor: entity(self),
        action: "message.reply",
        resource: entity(requester),
        onBehalfOf: behalfOf(state, req.principal, actor),
        principal: req.principal,
        depth: replyDepth,
      });
      if (decision.effect !== "allow") return deny(decision, denial(decision, actor, "message.reply", req.actor, denier === "principal" ? req.principal : undefined), req.actor);
      const event = withCause<PendingOf<ReplyEvent>>(
        { v: EVENT_VERSION, id, at: now, actor, principal: req.principal, syscall: request.id, trace: req.trace, depth: replyDepth, type: EventType.Reply, to: req.actor, inReplyTo, decision },
        request,
      );
      if (request.error !== undefined) event.error = request.error;
      else event.body = request.body ?? null;
      return { kind: "append", subject: subjects.logReplies(req.actor), msgId, event, answer: ok };
    }
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
