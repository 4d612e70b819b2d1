/**
 * The log's events and the syscall wire shapes. Every event in the log is one of {@link LogEvent};
 * its stored bytes are msgpack of that object, and its `prev` field chains it to the entry before.
 * The JSON Schemas in schemas/ describe the same shapes for other languages and are what the
 * kernel validates incoming syscalls against.
 */
import type { WireError } from "./errors.js";
import type { Labels, ToolManifest, Usage } from "./services.js";
import type { EventId, SyscallId, TraceId } from "./ids.js";
import type { BlobRef } from "./blobs.js";

/** Version of the event format. */
export const EVENT_VERSION = 1;

export const EventType = {
  Genesis: "kernel.genesis",
  Fork: "kernel.fork",
  PolicyLoaded: "policy.loaded",
  IdentityRegistered: "identity.registered",
  Message: "message",
  Reply: "reply",
  Denied: "decision.denied",
  Rejected: "input.rejected",
  Record: "record",
  Checkpoint: "checkpoint",
  AgentControlled: "agent.controlled",
  EffectStarted: "effect.started",
  EffectCompleted: "effect.completed",
  BudgetSet: "budget.set",
  ApprovalRequested: "approval.requested",
  ApprovalDecided: "approval.decided",
  ToolRegistered: "tool.registered",
  Blob: "blob",
} as const;
export type EventType = (typeof EventType)[keyof typeof EventType];

export const IdentityKind = { Agent: "agent", Principal: "principal" } as const;
export type IdentityKind = (typeof IdentityKind)[keyof typeof IdentityKind];

/** A kernel decision, recorded with the event it governs. */
export interface Decision {
  effect: "allow" | "deny";
  /** Ids of the policies that determined the decision (empty for default deny). */
  policies: string[];
  /** sha256 of the policy set in force. */
  policySet: string;
  /** Evaluation errors; any error makes the decision deny. */
  errors?: string[];
}

/**
 * A delegation scope: what the recipient of a message may do on its behalf. It only narrows
 * along the causal chain (fewer actions, earlier expiry), never widens.
 */
export interface Scope {
  /** Actions the recipient may take; absent = whatever its own and the principal's grants allow. */
  actions?: string[];
  /** After this time (ms since the epoch) the recipient may do nothing more for this work. */
  expiresAt?: number;
}

/** A value an agent observed that replay must serve back: clock reads and random draws. */
export interface Observation {
  kind: "now" | "random";
  value: number;
}

/** Fields every stored event has. */
interface EventBase {
  v: typeof EVENT_VERSION;
  /** Stream sequence this event was written at. */
  seq: number;
  /** Hex sha256 of the previous log entry (subject and bytes); 64 zeros for the first. */
  prev: string;
  id: EventId;
  /** Kernel clock, ms since the epoch. */
  at: number;
}

/** Fields of events caused by an actor's syscall. */
interface CausedFields {
  /** The authenticated actor: taken from the subject it published on, never from a payload. */
  actor: string;
  /** On whose behalf: stamped at ingress, carried along the causal chain. */
  principal: string;
  /** The caller's syscall id: repeats of it are answered from the log. */
  syscall: SyscallId;
  trace: TraceId;
  /** The event whose handling caused this syscall, if any. */
  causation?: EventId;
  /** Hops from the principal's original injection. */
  depth: number;
  labels?: string[];
}

export interface GenesisEvent extends EventBase {
  type: typeof EventType.Genesis;
  /** Public nkey that signs checkpoints. */
  kernelKey: string;
}

/**
 * A fork (`maxwell replay fork`): this log's first `upTo` entries were copied verbatim from
 * another log (whose kernel key is `parentKey`), and from here on a different kernel writes it.
 * Checkpoints before this event are signed by the parent's key, checkpoints after it by
 * `kernelKey`. The forking kernel minted fresh credentials for the identities it took over.
 */
export interface ForkEvent extends EventBase {
  type: typeof EventType.Fork;
  /** Last sequence copied from the parent log (the entry just before this event). */
  upTo: number;
  /** The kernel key in effect in the parent log at `upTo`. */
  parentKey: string;
  /** Public nkey that signs this log's checkpoints from now on. */
  kernelKey: string;
  /** Identity name → public nkey of the credential the forking kernel minted for it. */
  identities: Record<string, string>;
}

export interface PolicyLoadedEvent extends EventBase {
  type: typeof EventType.PolicyLoaded;
  policySet: string;
  policies: string[];
}

export interface IdentityRegisteredEvent extends EventBase {
  type: typeof EventType.IdentityRegistered;
  name: string;
  kind: IdentityKind;
  groups: string[];
  /** Public nkey of the identity's NATS user. */
  publicKey: string;
}

/**
 * How the kernel treats an agent: `running`; `paused` (nothing accepted from it or delivered to
 * it, its queued work kept); `quarantined` (it runs, but every consequential action is denied);
 * `killed` (its credential revoked, its pending requests failed; final).
 */
export const AgentState = { Running: "running", Paused: "paused", Quarantined: "quarantined", Killed: "killed" } as const;
export type AgentState = (typeof AgentState)[keyof typeof AgentState];

/** An operator changed an agent's state. */
export interface AgentControlledEvent extends EventBase {
  type: typeof EventType.AgentControlled;
  agent: string;
  state: AgentState;
  reason?: string;
  /** For `killed`: the public key of the credential revoked. */
  publicKey?: string;
}

/** A message or request delivered to `to`'s inbox. The decision rides with it: one write. */
export interface MessageEvent extends EventBase, CausedFields {
  type: typeof EventType.Message;
  kind: "send" | "request";
  to: string;
  body: unknown;
  decision: Decision;
  /** For requests: when the kernel answers `timeout` if no reply came (ms since the epoch). */
  deadline?: number;
  observed?: Observation[];
  /** What the recipient may do on this work's behalf (delegation). */
  scope?: Scope;
}

/** The answer to a request, delivered to the requester's replies. */
export interface ReplyEvent extends EventBase, CausedFields {
  type: typeof EventType.Reply;
  to: string;
  inReplyTo: EventId;
  body?: unknown;
  /** Set when the request failed (e.g. timeout) instead of being answered. */
  error?: WireError;
  decision: Decision;
  observed?: Observation[];
}

export interface DeniedEvent extends EventBase, CausedFields {
  type: typeof EventType.Denied;
  op: string;
  to?: string;
  decision: Decision;
  error: WireError;
  observed?: Observation[];
  /**
   * The refused request as the actor sent it, so replay can compare all of it. Absent for memory
   * operations (a value in it would be in the log in the clear, beyond erasure) and in events
   * written before it was recorded.
   */
  request?: SyscallRequest;
}

/** Input that could not be accepted (malformed, invalid, forged). */
export interface RejectedEvent extends EventBase {
  type: typeof EventType.Rejected;
  /** The actor the subject named, when it was well formed. */
  actor?: string;
  subject: string;
  size: number;
  error: WireError;
}

export interface RecordEvent extends EventBase, CausedFields {
  type: typeof EventType.Record;
  observed: Observation[];
}

export interface CheckpointEvent extends EventBase {
  type: typeof EventType.Checkpoint;
  /** Last sequence covered. */
  upTo: number;
  /** Hash of the entry at `upTo`. */
  head: string;
  /** Public nkey of the signer. */
  key: string;
  /** base64 ed25519 signature over {@link checkpointMessage}. */
  sig: string;
}

/** The kinds of effect syscall: a model call, a tool call, a memory operation. */
export type EffectKind = "llm" | "tool" | "mem";

/** What an effect holds of a budget until it settles. */
export interface Reservation {
  tokens?: number;
  /** Millionths of a US dollar. */
  microUsd?: number;
  toolCalls?: number;
}

/**
 * An effect the kernel allowed and is about to carry out: written before the service is called,
 * so a crash mid-call leaves the intent in the log. Memory writes take effect from this event.
 */
export interface EffectStartedEvent extends EventBase, CausedFields {
  type: typeof EventType.EffectStarted;
  kind: EffectKind;
  /** Service operation (e.g. `complete`, `call`, `put`). */
  op: string;
  /** Model, tool or memory namespace. */
  target: string;
  args: unknown;
  decision: Decision;
  /** Labels of everything that influenced the call. */
  labels: Labels;
  reserved?: Reservation;
  /** For held effects: the approval that released it. */
  approval?: EventId;
  /** Parts of `args` stored by content hash (left `null` in place): path → blob. See blobs.ts. */
  blobs?: Record<string, BlobRef>;
}

/** The outcome of an effect, recorded before the agent sees it. */
export interface EffectCompletedEvent extends EventBase, CausedFields {
  type: typeof EventType.EffectCompleted;
  /** Id of the effect.started event. */
  effect: EventId;
  kind: EffectKind;
  op: string;
  target: string;
  result?: unknown;
  /** Set when the result is stored by content hash (`result` is then `null`): `{ result: blob }`. */
  blobs?: Record<string, BlobRef>;
  error?: WireError;
  /** Labels of the result: the call's labels joined with what the service added. */
  labels: Labels;
  usage?: Usage;
  /** What the effect actually cost (settles the reservation). */
  spent?: Reservation;
  /** Secret values and credential shapes removed from the result before it was recorded. */
  redactions?: number;
}

/** Who a budget limits. `trace` budgets apply to each trace separately. */
export type BudgetScope = "principal" | "agent" | "trace";

/** Limits of one budget; an absent field is unlimited. */
export interface BudgetLimits {
  tokens?: number;
  microUsd?: number;
  toolCalls?: number;
  /** Messages and requests sent per rolling minute. */
  messagesPerMinute?: number;
  /** Requests and effects outstanding at once. */
  concurrent?: number;
  /** Approvals waiting for a human at once. */
  pendingApprovals?: number;
  /** Causal hops from the principal's injection (stops loops earlier than the kernel's limit). */
  depth?: number;
}

/** An operator set (or cleared, with `limits` empty) a budget. */
export interface BudgetSetEvent extends EventBase {
  type: typeof EventType.BudgetSet;
  scope: BudgetScope;
  /** Principal or agent name; `*` for the default of every trace (scope `trace`). */
  name: string;
  limits: BudgetLimits;
}

/** A syscall held for a human: the exact request, bound by digest, waiting until `expiresAt`. */
export interface ApprovalRequestedEvent extends EventBase, CausedFields {
  type: typeof EventType.ApprovalRequested;
  /** Syscall op held (`send`, `request`, `tool`, `llm`, `mem`). */
  op: string;
  /** The held request as the actor sent it. */
  request: SyscallRequest;
  /** sha256 over actor, op and the canonical request: what an approver must name. */
  digest: string;
  /** Why it is held: the annotation's value and the policies that asked for it. */
  reason: string;
  decision: Decision;
  labels: Labels;
  expiresAt: number;
}

/** A human's (or the clock's) decision on a held request. */
export interface ApprovalDecidedEvent extends EventBase {
  type: typeof EventType.ApprovalDecided;
  approval: EventId;
  verdict: "approve" | "deny";
  /** The principal who decided, or `kernel` when the approval expired. */
  by: string;
  reason?: string;
  /** The approver vouches for the inputs: the released action loses the `untrusted` label. */
  endorse?: boolean;
}

/** An operator registered (or re-approved) a tool manifest; its hash is pinned. */
export interface ToolRegisteredEvent extends EventBase {
  type: typeof EventType.ToolRegistered;
  manifest: ToolManifest;
  /** sha256 of the manifest's canonical JSON. */
  hash: string;
  /** Cedar groups the tool joins (e.g. `cleared` for a sink cleared for confidential data). */
  groups?: string[];
}

export type LogEvent =
  | GenesisEvent
  | ForkEvent
  | PolicyLoadedEvent
  | IdentityRegisteredEvent
  | MessageEvent
  | ReplyEvent
  | DeniedEvent
  | RejectedEvent
  | RecordEvent
  | CheckpointEvent
  | AgentControlledEvent
  | EffectStartedEvent
  | EffectCompletedEvent
  | BudgetSetEvent
  | ApprovalRequestedEvent
  | ApprovalDecidedEvent
  | ToolRegisteredEvent
  | BlobEvent;

/**
 * A large payload stored once by content hash (blobs.ts): the msgpack bytes of a part of an
 * effect's request or result, which events name by `hash` and this entry's sequence.
 */
export interface BlobEvent extends EventBase {
  type: typeof EventType.Blob;
  /** sha256 (hex) of `data`. */
  hash: string;
  size: number;
  data: Uint8Array;
}

/** A log event before the appender assigns its place in the chain. */
export type PendingEvent = LogEvent extends infer E
  ? E extends LogEvent
    ? Omit<E, "seq" | "prev">
    : never
  : never;

/** The bytes a checkpoint signature covers. */
export function checkpointMessage(upTo: number, head: string): string {
  return `maxwell-checkpoint:v1:${upTo}:${head}`;
}

/** What an actor publishes on `mx.sys.<actor>.<op>`. Actor and principal are never in here. */
export interface SyscallRequest {
  id: SyscallId;
  to?: string;
  body?: unknown;
  causation?: EventId;
  inReplyTo?: EventId;
  timeoutMs?: number;
  observed?: Observation[];
  /** For reply: answer with an error instead of a body. */
  error?: { code: WireError["code"]; message: string };
  /** For send and request: narrow what the recipient may do for this work. */
  scope?: Scope;
  /** Labels the caller adds to its action (it can only add; see {@link Labels}). */
  labels?: Labels;
}

/** What the kernel answers a syscall with. */
export type SyscallReply =
  | { ok: true; result: SyscallResult }
  | { ok: false; error: WireError };

export interface SyscallResult {
  event: EventId;
  seq: number;
  /** Trace the event belongs to. */
  trace?: TraceId;
  /** True when this answer comes from the log because the syscall id was seen before. */
  repeated?: boolean;
  /** For a repeated request whose reply is already in the log. */
  reply?: ReplyEvent;
  /** For effect syscalls: the recorded outcome. */
  effect?: { result?: unknown; error?: WireError; labels: Labels; usage?: Usage };
  /** Labels of the event (what the recipient of it will be tainted with). */
  labels?: Labels;
}

/** What an agent publishes on `mx.sys.<agent>.ack`: transport-level, never logged. */
export interface AckRequest {
  /** Stream sequences of deliveries fully handled. */
  ack?: number[];
  /** Deliveries still being handled (resets their redelivery timer). */
  working?: number[];
  /** Deliveries to try again later. */
  nak?: number[];
  /** The agent (re)started: send every unacknowledged delivery again now. */
  resend?: boolean;
}
