/**
 * Every NATS subject and header name Maxwell uses, built only here. Nothing else in the tree
 * writes a subject string inline: permissions, the kernel and the SDK all derive from these
 * functions, so the perimeter the server enforces and the subjects code uses cannot drift apart.
 */
import { ErrorCode, MaxwellError } from "./errors.js";

/** The single prefix of every Maxwell subject. */
export const PREFIX = "mx";
/** Name of the JetStream stream that is Maxwell's log. */
export const LOG_STREAM = "MXLOG";
/** Queue group the kernel instances share. */
export const KERNEL_QUEUE = "mx-kernel";

/** Header names. Actor and principal are never read from headers; they are listed to refuse them. */
export const Header = {
  TraceParent: "traceparent",
  TraceState: "tracestate",
  MsgId: "Nats-Msg-Id",
  ExpectedLastSeq: "Nats-Expected-Last-Sequence",
  /** On a delivery: present when the event was handed to the agent before. */
  Redelivered: "Mx-Redelivered",
} as const;

/** Header names whose presence on a syscall is a forgery attempt (case-insensitive). */
export const FORBIDDEN_HEADERS: readonly string[] = ["mx-actor", "mx-principal", "actor", "principal"];

/** Syscall operations an actor may publish under `mx.sys.<actor>.<op>`. */
export const SyscallOp = {
  Send: "send",
  Request: "request",
  Reply: "reply",
  Record: "record",
  /** A model call through the gateway (`to` = model, `body` = Messages API params). */
  Llm: "llm",
  /** A tool call (`to` = tool name, `body` = its arguments). */
  Tool: "tool",
  /** A memory operation (`to` = namespace, `body` = `{ op, ...args }`). */
  Mem: "mem",
  /** A principal decides a held action (`body` = `{ approval, digest, verdict, reason? }`). */
  Approve: "approve",
  /** Transport-level: acknowledges deliveries; not a logged action (see schemas/ack.json). */
  Ack: "ack",
} as const;
export type SyscallOp = (typeof SyscallOp)[keyof typeof SyscallOp];
const syscallOps: ReadonlySet<string> = new Set(Object.values(SyscallOp));
export function isSyscallOp(value: string): value is SyscallOp {
  return syscallOps.has(value);
}

/** Admin operations published by the CLI under `mx.admin.<op>`. */
export const AdminOp = {
  Register: "register",
  List: "list",
  Status: "status",
  Checkpoint: "checkpoint",
  /** Raw log entries for the CLI: the admin credential has no JetStream access of its own. */
  Read: "read",
  /** Re-evaluate recorded decisions under a candidate policy set (changes nothing). */
  PolicyTest: "policy-test",
  /** Validate and install a policy set; logged with its hash. */
  PolicyApply: "policy-apply",
  /** Pause, resume, quarantine or release an agent; logged. */
  Control: "control",
  /** Budget usage against limits. */
  Budget: "budget",
  /** Set or clear a budget's limits; logged. */
  BudgetSet: "budget-set",
  /** Held actions waiting for a human (and recent decisions). */
  Approvals: "approvals",
  /** Register (pin) or re-approve a tool manifest; logged. */
  ToolRegister: "tool-register",
  /** Registered tools and their pinned hashes. */
  Tools: "tools",
  /** Rebuild the kernel's state from the log and compare its digest with the live one (or show it as of a seq). */
  State: "state",
  /** Memory for people (ls, get, search, export, digest): forwarded to the memory service. */
  Memory: "memory",
} as const;
export type AdminOp = (typeof AdminOp)[keyof typeof AdminOp];

/**
 * Identity names: lowercase letters, digits, `-` and `_`, starting with a letter, at most 64
 * characters. No dots, wildcards, whitespace or control characters can reach a subject.
 */
const NAME = /^[a-z][a-z0-9_-]{0,63}$/;

/** Whether `name` is a valid identity name (see {@link assertName}). */
export function isName(name: unknown): name is string {
  return typeof name === "string" && NAME.test(name);
}

/** Throws a `bad_request` MaxwellError unless `name` is a valid identity name. */
export function assertName(name: unknown, what = "name"): asserts name is string {
  if (!isName(name)) {
    const shown = typeof name === "string" ? JSON.stringify(name) : typeof name;
    throw new MaxwellError(
      ErrorCode.BadRequest,
      `invalid ${what} ${shown}: use 1-64 characters from a-z, 0-9, '-', '_', starting with a letter`,
    );
  }
}

function named(name: string): string {
  assertName(name);
  return name;
}

export const subjects = {
  /** Where an actor publishes syscall `op`. */
  syscall: (actor: string, op: SyscallOp): string => `${PREFIX}.sys.${named(actor)}.${op}`,
  /** Everything an actor may publish. */
  syscallsOf: (actor: string): string => `${PREFIX}.sys.${named(actor)}.>`,
  /** What the kernel subscribes to: every actor's syscalls. */
  allSyscalls: (): string => `${PREFIX}.sys.*.*`,
  /** An actor's inbox prefix: syscall replies come here, published only by the kernel. */
  inboxPrefix: (actor: string): string => `${PREFIX}.rep.${named(actor)}`,
  /** Where the kernel notifies a principal who may decide a held action (under its own inbox). */
  approvalNotices: (principal: string): string => `${PREFIX}.rep.${named(principal)}.approvals`,
  /** Everything under an actor's inbox. */
  inboxOf: (actor: string): string => `${PREFIX}.rep.${named(actor)}.>`,
  /** All inboxes (the kernel publishes replies into them). */
  allInboxes: (): string => `${PREFIX}.rep.>`,
  /**
   * Where the kernel delivers log events to an agent (the exact stored bytes). Only the kernel
   * publishes here: agents hold no JetStream permission at all (see docs/decisions/0003).
   */
  delivery: (agent: string): string => `${PREFIX}.dlv.${named(agent)}`,
  /** Admin requests from the CLI. */
  admin: (op: AdminOp): string => `${PREFIX}.admin.${op}`,
  allAdmin: (): string => `${PREFIX}.admin.>`,
  /** Log: messages and requests delivered to an agent. */
  logInbox: (agent: string): string => `${PREFIX}.log.in.${named(agent)}`,
  /** Log: replies to requests an agent made. */
  logReplies: (agent: string): string => `${PREFIX}.log.rep.${named(agent)}`,
  /** Log: decisions that deliver nothing (denials, rejections), filed under the actor. */
  logDecision: (actor: string): string => `${PREFIX}.log.dec.${named(actor)}`,
  /** Log: rejected input whose actor could not be established. */
  logRejectedUnknown: (): string => `${PREFIX}.log.dec._`,
  /** Log: syscall records that deliver nothing (observed clock and random values). */
  logRecord: (actor: string): string => `${PREFIX}.log.rec.${named(actor)}`,
  /** Log: identity registrations. */
  logIdentity: (name: string): string => `${PREFIX}.log.id.${named(name)}`,
  /** Log: an operator paused, resumed, quarantined or released an agent. */
  logControl: (agent: string): string => `${PREFIX}.log.ctl.${named(agent)}`,
  /** Log: kernel housekeeping (genesis, policy loads, checkpoints, budgets). */
  logKernel: (what: "genesis" | "fork" | "policy" | "checkpoint" | "budget"): string => `${PREFIX}.log.k.${what}`,
  /** Log: an actor's effects (model calls, tool calls, memory operations) and their outcomes. */
  logEffect: (actor: string): string => `${PREFIX}.log.fx.${named(actor)}`,
  /** Log: actions of an actor held for a human, and the decisions on them. */
  logApproval: (actor: string): string => `${PREFIX}.log.ap.${named(actor)}`,
  /** Log: tool registrations. */
  logTool: (tool: string): string => `${PREFIX}.log.tool.${named(tool)}`,
  /** Where large payloads are stored once by content hash (src/protocol/blobs.ts). */
  logBlob: (): string => `${PREFIX}.log.blob`,
  /** Every subject of the log stream. */
  logAll: (): string => `${PREFIX}.log.>`,
  /** JetStream API subjects scoped to one consumer, for an agent's credential. */
  consumerNext: (consumer: string): string => `$JS.API.CONSUMER.MSG.NEXT.${LOG_STREAM}.${consumer}`,
  consumerInfo: (consumer: string): string => `$JS.API.CONSUMER.INFO.${LOG_STREAM}.${consumer}`,
  consumerAcks: (consumer: string): string => `$JS.ACK.${LOG_STREAM}.${consumer}.>`,
} as const;

/** Durable consumer names of an agent: its inbox and its replies. */
export const consumers = {
  inbox: (agent: string): string => `in-${named(agent)}`,
  replies: (agent: string): string => `rep-${named(agent)}`,
} as const;

/** Parses `mx.sys.<actor>.<op>`; returns undefined when the subject is not a syscall subject. */
export function parseSyscallSubject(subject: string): { actor: string; op: string } | undefined {
  const parts = subject.split(".");
  if (parts.length !== 4 || parts[0] !== PREFIX || parts[1] !== "sys") return undefined;
  const actor = parts[2];
  const op = parts[3];
  if (actor === undefined || op === undefined) return undefined;
  return { actor, op };
}
