/**
 * The kernel's state: a projection of the log. `evolve(state, event)` is the only way it changes,
 * both when the kernel rebuilds from the log at start and after each append, so the live state
 * and a replayed one cannot differ.
 */
import {
  AgentState,
  ErrorCode,
  EventType,
  GENESIS_PREV,
  joinLabels,
  type EffectKind,
  type EventId,
  type IdentityKind,
  type Labels,
  type LogEvent,
  type ReplyEvent,
  type Reservation,
  type Scope,
  type SyscallRequest,
  type ToolManifest,
  type TraceId,
  type WireError,
} from "../../src/protocol/mod.js";
import { createHash } from "node:crypto";
import { Budgets, budgetKeys } from "./budget.js";

/** What a syscall produced, kept so a repeat of it is answered from the log. */
export interface RecordedSyscall {
  event: EventId;
  seq: number;
  /** Set when the syscall was denied: a repeat is denied the same way. */
  error?: WireError;
  /** Set while the syscall is held for a human: the approval's event id. */
  held?: EventId;
  /** For effects: the seq of the effect.completed event once the outcome is recorded. */
  completed?: number;
}

export interface Identity {
  name: string;
  kind: IdentityKind;
  groups: string[];
  publicKey: string;
  /** Agents only: set by an operator (absent = running). */
  control?: AgentState;
  /** When it was killed (ms since the epoch). */
  killedAt?: number;
}

/** What the kernel remembers of a delivered event, to check causation and replies against. */
export interface DeliveryFacts {
  to: string;
  actor: string;
  principal: string;
  trace: TraceId;
  depth: number;
  kind: "send" | "request" | "reply";
  deadline?: number;
  /** What the recipient may do on this work's behalf (delegation), when narrowed. */
  scope?: Scope;
  /** For requests: the reply (or kernel timeout) once it is in the log. */
  reply?: ReplyEvent;
  /** For requests: the delivery whose handling made the request (its taint takes the reply's labels). */
  cause?: EventId;
  /**
   * Labels of everything the recipient has seen while handling this delivery: the event's own
   * labels, joined with every reply and effect result it got since. Its syscalls carry them.
   */
  labels?: Labels;
}

/** An effect allowed and started whose outcome is not recorded yet. */
export interface OpenEffect {
  actor: string;
  principal: string;
  trace: TraceId;
  kind: EffectKind;
  op: string;
  target: string;
  syscall: string;
  causation?: EventId;
  labels: Labels;
  reserved?: Reservation;
  seq: number;
}

/** A held action and what became of it. */
export interface ApprovalFacts {
  id: EventId;
  actor: string;
  principal: string;
  trace: TraceId;
  op: string;
  request: SyscallRequest;
  digest: string;
  reason: string;
  labels: Labels;
  at: number;
  expiresAt: number;
  status: "pending" | "approved" | "denied" | "expired";
  decidedBy?: string;
  decidedAt?: number;
  endorse?: boolean;
}

export interface KernelState {
  identities: Map<string, Identity>;
  /** `<actor>\0<syscall id>` → what the syscall produced. Answers repeats from the log. */
  syscalls: Map<string, RecordedSyscall>;
  deliveries: Map<EventId, DeliveryFacts>;
  /** Requests with no reply yet, by event id → deadline. */
  pending: Map<EventId, number>;
  /** Registered tools by name: the manifest and its pinned hash. */
  tools: Map<string, { manifest: ToolManifest; hash: string; groups: string[] }>;
  /** Effects started and not completed, by effect.started event id. */
  effects: Map<EventId, OpenEffect>;
  approvals: Map<EventId, ApprovalFacts>;
  /** Per agent: the join of every label it was ever delivered (for syscalls that name no causation). */
  agentLabels: Map<string, Labels>;
  /** Blobs stored in the log, by content hash → sequence: a payload seen before is named, not stored again. */
  blobs: Map<string, number>;
  budgets: Budgets;
  policySet: string | undefined;
  kernelKey: string | undefined;
  head: { seq: number; hash: string };
  lastCheckpoint: number;
  events: number;
}

export function initialState(): KernelState {
  return {
    identities: new Map(),
    syscalls: new Map(),
    deliveries: new Map(),
    pending: new Map(),
    tools: new Map(),
    effects: new Map(),
    approvals: new Map(),
    agentLabels: new Map(),
    blobs: new Map(),
    budgets: new Budgets(),
    policySet: undefined,
    kernelKey: undefined,
    head: { seq: 0, hash: GENESIS_PREV },
    lastCheckpoint: 0,
    events: 0,
  };
}

export function syscallKey(actor: string, syscall: string): string {
  return `${actor}\u0000${syscall}`;
}

/**
 * Bounds on remembered facts. Older entries fall out first; a syscall repeated after its entry
 * fell out is treated as new. Sized for hours of traffic at bench rates.
 */
const MAX_REMEMBERED = 1_000_000;

function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  if (map.size >= MAX_REMEMBERED) {
    const oldest = map.keys().next().value as K;
    map.delete(oldest);
  }
  map.set(key, value);
}

/** Joins `labels` into what an agent has seen overall. */
function taintAgent(state: KernelState, agent: string, labels: Labels | undefined): void {
  if (!labels || labels.length === 0) return;
  state.agentLabels.set(agent, joinLabels(state.agentLabels.get(agent), labels));
}

/** Joins `labels` into a delivery's taint (and its recipient's). */
function taintDelivery(state: KernelState, delivery: EventId | undefined, labels: Labels | undefined): void {
  if (delivery === undefined || !labels || labels.length === 0) return;
  const facts = state.deliveries.get(delivery);
  if (!facts) return;
  facts.labels = joinLabels(facts.labels, labels);
  taintAgent(state, facts.to, labels);
}

/**
 * The labels a new syscall of `actor` carries: everything it saw while handling the delivery it
 * names as causation, or, when it names none, everything it was ever delivered (the kernel cannot
 * know what influenced it, so it assumes all of it). Joined with what the caller adds.
 */
export function labelsOf(state: KernelState, actor: string, causation: EventId | undefined, added: Labels | undefined): Labels {
  const base = causation !== undefined ? state.deliveries.get(causation)?.labels : state.agentLabels.get(actor);
  if (!added || added.length === 0) return base ?? [];
  return joinLabels(base, added);
}

/** Applies one stored event to the state. `hash` is the entry's chain hash. */
export function evolve(state: KernelState, event: LogEvent, hash: string): KernelState {
  state.head = { seq: event.seq, hash };
  state.events += 1;
  switch (event.type) {
    case EventType.Genesis:
      state.kernelKey = event.kernelKey;
      break;
    case EventType.Fork:
      // Another kernel writes from here on, with credentials of its own for the identities.
      state.kernelKey = event.kernelKey;
      for (const [name, publicKey] of Object.entries(event.identities)) {
        const identity = state.identities.get(name);
        if (identity) identity.publicKey = publicKey;
      }
      break;
    case EventType.PolicyLoaded:
      state.policySet = event.policySet;
      break;
    case EventType.IdentityRegistered:
      state.identities.set(event.name, { name: event.name, kind: event.kind, groups: event.groups, publicKey: event.publicKey });
      break;
    case EventType.AgentControlled: {
      const identity = state.identities.get(event.agent);
      if (identity) {
        if (event.state === AgentState.Running) delete identity.control;
        else identity.control = event.state;
        if (event.state === AgentState.Killed) identity.killedAt = event.at;
      }
      break;
    }
    case EventType.Message: {
      remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq });
      const facts: DeliveryFacts = {
        to: event.to,
        actor: event.actor,
        principal: event.principal,
        trace: event.trace,
        depth: event.depth,
        kind: event.kind,
      };
      if (event.kind === "request" && event.deadline !== undefined) {
        facts.deadline = event.deadline;
        state.pending.set(event.id, event.deadline);
      }
      if (event.scope !== undefined) facts.scope = event.scope;
      if (event.labels !== undefined && event.labels.length > 0) facts.labels = event.labels;
      if (event.kind === "request" && event.causation !== undefined) facts.cause = event.causation;
      remember(state.deliveries, event.id, facts);
      taintAgent(state, event.to, event.labels);
      state.budgets.onMessage(event.actor, event.principal, event.trace, event.at, event.kind === "request");
      break;
    }
    case EventType.Reply: {
      remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq });
      remember(state.deliveries, event.id, {
        to: event.to,
        actor: event.actor,
        principal: event.principal,
        trace: event.trace,
        depth: event.depth,
        kind: "reply",
      });
      const request = state.deliveries.get(event.inReplyTo);
      if (request) {
        request.reply = event;
        // The requester's handling of its delivery now depends on the answer.
        taintDelivery(state, request.cause, event.labels);
        if (state.pending.has(event.inReplyTo)) state.budgets.onRequestClosed(request.actor, request.principal, request.trace);
      }
      taintAgent(state, event.to, event.labels);
      state.pending.delete(event.inReplyTo);
      break;
    }
    case EventType.EffectStarted: {
      remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq });
      const open: OpenEffect = {
        actor: event.actor,
        principal: event.principal,
        trace: event.trace,
        kind: event.kind,
        op: event.op,
        target: event.target,
        syscall: event.syscall,
        labels: event.labels,
        seq: event.seq,
      };
      if (event.causation !== undefined) open.causation = event.causation;
      if (event.reserved !== undefined) open.reserved = event.reserved;
      state.effects.set(event.id, open);
      state.budgets.onEffectStarted(budgetKeys(event.actor, event.principal, event.trace), event.reserved);
      break;
    }
    case EventType.EffectCompleted: {
      const open = state.effects.get(event.effect);
      const recorded = state.syscalls.get(syscallKey(event.actor, event.syscall));
      if (recorded && recorded.event === event.effect) recorded.completed = event.seq;
      if (open) {
        state.effects.delete(event.effect);
        state.budgets.onEffectCompleted(budgetKeys(open.actor, open.principal, open.trace), open.reserved, event.spent);
      }
      // Whatever handled the causing delivery has now seen the result.
      taintDelivery(state, event.causation, event.labels);
      taintAgent(state, event.actor, event.labels);
      break;
    }
    case EventType.BudgetSet:
      state.budgets.setLimits(event.scope, event.name, event.limits);
      break;
    case EventType.ApprovalRequested: {
      remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq, held: event.id });
      state.approvals.set(event.id, {
        id: event.id,
        actor: event.actor,
        principal: event.principal,
        trace: event.trace,
        op: event.op,
        request: event.request,
        digest: event.digest,
        reason: event.reason,
        labels: event.labels,
        at: event.at,
        expiresAt: event.expiresAt,
        status: "pending",
      });
      state.budgets.onApprovalOpened(budgetKeys(event.actor, event.principal, event.trace));
      break;
    }
    case EventType.ApprovalDecided: {
      const approval = state.approvals.get(event.approval);
      if (!approval || approval.status !== "pending") break;
      approval.status = event.verdict === "approve" ? "approved" : event.by === "kernel" ? "expired" : "denied";
      approval.decidedBy = event.by;
      approval.decidedAt = event.at;
      if (event.endorse) approval.endorse = true;
      const key = syscallKey(approval.actor, approval.request.id);
      if (event.verdict === "deny") {
        const why = approval.status === "expired" ? "expired before anyone decided" : `was refused by ${event.by}${event.reason ? `: ${event.reason}` : ""}`;
        remember(state.syscalls, key, { event: event.id, seq: event.seq, error: { code: ErrorCode.Forbidden, message: `held action ${approval.id} ${why}` } });
      }
      state.budgets.onApprovalClosed(budgetKeys(approval.actor, approval.principal, approval.trace));
      break;
    }
    case EventType.ToolRegistered:
      state.tools.set(event.manifest.name, { manifest: event.manifest, hash: event.hash, groups: event.groups ?? [] });
      break;
    case EventType.Denied:
      // A refusal for now (the agent is paused) is not the answer forever: a retry is judged afresh.
      if (event.error.code !== ErrorCode.Unavailable) {
        remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq, error: event.error });
      }
      break;
    case EventType.Record:
      remember(state.syscalls, syscallKey(event.actor, event.syscall), { event: event.id, seq: event.seq });
      break;
    case EventType.Checkpoint:
      state.lastCheckpoint = event.upTo;
      break;
    case EventType.Rejected:
      break;
    case EventType.Blob:
      if (!state.blobs.has(event.hash)) remember(state.blobs, event.hash, event.seq);
      break;
  }
  return state;
}

/**
 * A digest of everything the state holds: identities, remembered syscalls and deliveries, open
 * requests and effects, tools, approvals, labels, budgets (limits and usage), policy set and head.
 * A kernel rebuilt from the log must arrive at the same digest as the live one; `maxwell replay
 * state` compares them. Live-only bookkeeping (provisional budget charges) is left out.
 */
export function stateDigest(state: KernelState): string {
  const h = createHash("sha256");
  const section = (name: string, entries: Iterable<[unknown, unknown]>): void => {
    h.update(`\n#${name}\n`);
    for (const [k, v] of entries) h.update(`${JSON.stringify(k)}=${JSON.stringify(v)}\n`);
  };
  h.update(JSON.stringify({ policySet: state.policySet, kernelKey: state.kernelKey, head: state.head, lastCheckpoint: state.lastCheckpoint, events: state.events }));
  section("identities", state.identities);
  section("syscalls", state.syscalls);
  section("deliveries", state.deliveries);
  section("pending", state.pending);
  section("tools", state.tools);
  section("effects", state.effects);
  section("approvals", state.approvals);
  section("labels", state.agentLabels);
  section("blobs", state.blobs);
  section("budget-limits", state.budgets.limits);
  section("budget-usage", state.budgets.usage);
  return h.digest("hex");
}

/** What the state holds, in numbers and names: `maxwell replay state --to SEQ` prints it. */
export function stateSummary(state: KernelState): Record<string, unknown> {
  const approvals: Record<string, number> = {};
  for (const a of state.approvals.values()) approvals[a.status] = (approvals[a.status] ?? 0) + 1;
  return {
    seq: state.head.seq,
    events: state.events,
    policySet: state.policySet,
    identities: [...state.identities.values()].map((i) => ({ name: i.name, kind: i.kind, groups: i.groups, ...(i.control ? { control: i.control } : {}) })),
    tools: [...state.tools.values()].map((t) => ({ name: t.manifest.name, version: t.manifest.version, effect: t.manifest.effect, hash: t.hash })),
    pendingRequests: state.pending.size,
    openEffects: state.effects.size,
    approvals,
    budgets: state.budgets.report().map((r) => ({ key: r.key, ...(r.limits ? { limits: r.limits } : {}), tokens: r.usage.tokens, microUsd: r.usage.microUsd, toolCalls: r.usage.toolCalls })),
  };
}
