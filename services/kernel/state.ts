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
  type EventId,
  type IdentityKind,
  type LogEvent,
  type ReplyEvent,
  type Scope,
  type TraceId,
  type WireError,
} from "../../src/protocol/mod.js";

/** What a syscall produced, kept so a repeat of it is answered from the log. */
export interface RecordedSyscall {
  event: EventId;
  seq: number;
  /** Set when the syscall was denied: a repeat is denied the same way. */
  error?: WireError;
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
}

export interface KernelState {
  identities: Map<string, Identity>;
  /** `<actor>\0<syscall id>` → what the syscall produced. Answers repeats from the log. */
  syscalls: Map<string, RecordedSyscall>;
  deliveries: Map<EventId, DeliveryFacts>;
  /** Requests with no reply yet, by event id → deadline. */
  pending: Map<EventId, number>;
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

/** Applies one stored event to the state. `hash` is the entry's chain hash. */
export function evolve(state: KernelState, event: LogEvent, hash: string): KernelState {
  state.head = { seq: event.seq, hash };
  state.events += 1;
  switch (event.type) {
    case EventType.Genesis:
      state.kernelKey = event.kernelKey;
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
      remember(state.deliveries, event.id, facts);
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
      if (request) request.reply = event;
      state.pending.delete(event.inReplyTo);
      break;
    }
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
  }
  return state;
}
