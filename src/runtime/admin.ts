/**
 * Wire shapes of the admin operations (CLI → kernel on mx.admin.<op>). The admin credential is
 * the only one the server lets publish there.
 */
import type { AgentState, BudgetLimits, BudgetScope, IdentityKind } from "../protocol/events.js";
import type { WireError } from "../protocol/errors.js";

export interface RegisterRequest {
  name: string;
  kind: IdentityKind;
  groups?: string[];
}

export interface RegisterResult {
  name: string;
  kind: IdentityKind;
  groups: string[];
  publicKey: string;
  /** Standard NATS creds file content. Write it with mode 0600. */
  creds: string;
  seq: number;
}

export interface IdentitySummary {
  name: string;
  kind: IdentityKind;
  groups: string[];
  publicKey: string;
  /** Agents an operator paused or quarantined. */
  control?: AgentState;
}

export interface KernelStatus {
  seq: number;
  events: number;
  identities: number;
  policySet: string;
  policies: string[];
  lastCheckpoint: number;
  pendingRequests: number;
  uptimeMs: number;
  kernelKey: string;
}

export type AdminReply<T> = { ok: true; result: T } | { ok: false; error: WireError };

export interface ReadRequest {
  /** First sequence wanted. */
  from: number;
  /** At most this many entries (the kernel also caps the answer's size). */
  max?: number;
  /**
   * Instead of a range: exactly these sequences (at most {@link READ_SEQS_MAX}), e.g. one trace's
   * events found through the log index. `from` and `max` are then ignored.
   */
  seqs?: number[];
}

/** Most sequences one `read` by `seqs` may ask for. */
export const READ_SEQS_MAX = 1024;

export interface ReadResult {
  /** Entries in order, exactly as stored. May skip sequences the server no longer has. */
  entries: Array<{ seq: number; subject: string; data: Uint8Array }>;
  /** The stream's last sequence as the server reports it. */
  lastSeq: number;
  /**
   * For a read by `seqs`: how many of the requested sequences (sorted ascending) this answer
   * settles, found or not. Fewer than asked when the answer reached its size cap: ask again for
   * the rest.
   */
  settled?: number;
}

export interface PolicyTestRequest {
  /** Candidate policy set (Cedar text). */
  text: string;
  /** Only decisions after this sequence. */
  since?: number;
}

export interface PolicyTestResult {
  policySet: string;
  evaluated: number;
  unchanged: number;
  skipped: number;
  changed: Array<{ seq: number; at: number; actor: string; action: string; resource: string; principal: string; was: "allow" | "deny" | "hold"; now: "allow" | "deny" | "hold"; policies: string[] }>;
}

export interface PolicyApplyResult {
  policySet: string;
  policies: string[];
  /** Sequence of the policy.loaded event (0 when the set was already in force). */
  seq: number;
}

export interface ControlRequest {
  agent: string;
  state: AgentState;
  reason?: string;
}

export interface ControlResult {
  agent: string;
  was: AgentState;
  state: AgentState;
  /** Sequence of the agent.controlled event. */
  seq: number;
}

export interface BudgetSetRequest {
  scope: BudgetScope;
  /** Principal or agent name; ignored for `trace` (the limits apply to every trace). */
  name?: string;
  /** New limits; an empty object clears the budget. */
  limits: BudgetLimits;
}

export interface BudgetRow {
  /** `principal:<name>`, `agent:<name>`, `trace:*` or `trace:<id>`. */
  key: string;
  limits?: BudgetLimits;
  used: { tokens: number; microUsd: number; toolCalls: number; open: number; approvals: number; messagesLastMinute: number };
  reserved: { tokens: number; microUsd: number; toolCalls: number };
}

export interface ApprovalSummary {
  id: string;
  actor: string;
  principal: string;
  op: string;
  /** What the action targets (agent, model, tool, namespace). */
  to?: string;
  body: unknown;
  digest: string;
  reason: string;
  labels: string[];
  at: number;
  expiresAt: number;
  status: "pending" | "approved" | "denied" | "expired";
  decidedBy?: string;
}

export interface ToolRegisterRequest {
  /** A manifest to pin. */
  manifest?: unknown;
  /** Or: pin every manifest a tool service hosts (new ones; changed ones only with `approve`). */
  service?: string;
  /** Re-approve manifests that changed since they were pinned. */
  approve?: boolean;
  groups?: string[];
}

export interface ToolRegisterResult {
  tools: Array<{ name: string; version: string; effect: string; hash: string; status: "pinned" | "unchanged" | "changed-refused" | "re-approved" }>;
}

export interface ToolSummary {
  name: string;
  version: string;
  effect: string;
  hash: string;
  service: string;
  groups: string[];
  description: string;
}

/**
 * The memory service's answer to `{op: "verify"}` (through `mx.admin.memory`): the log up to the
 * sequence the live store reflects, rebuilt into a scratch store, compared by digest.
 */
export interface MemoryVerifyResult {
  identical: boolean;
  live: string;
  replayed: string;
  /** The log sequence both stores reflect, and the time TTLs are judged at. */
  appliedSeq: number;
  at: number;
  /** Writes the rebuild applied, and how long it took. */
  applied: number;
  ms: number;
}

/** A stored state snapshot checked against the fold from the start. */
export interface SnapshotCheck {
  seq: number;
  identical: boolean;
  /** Why the kernel would pass this snapshot over (it is then not compared). */
  unusable?: string;
}

export interface StateReplayResult {
  /** Last seq folded. */
  seq: number;
  /** Events in the rebuilt state. */
  events: number;
  /** Events folded by this replay (fewer than `events` when it started from a snapshot). */
  folded: number;
  /** The snapshot the fold started from (time travel only). */
  fromSnapshot?: number;
  /** Snapshots passed on the way, each compared with the fold at its seq. */
  snapshots: SnapshotCheck[];
  ms: number;
  eventsPerSec: number;
  /** Digest of the state rebuilt from the log. */
  replayed: string;
  /** Digest of the live kernel's state at the same seq (absent with `to`). */
  live?: string;
  identical?: boolean;
  /** What the rebuilt state holds. */
  summary: Record<string, unknown>;
}
