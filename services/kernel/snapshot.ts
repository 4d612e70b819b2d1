/**
 * Snapshots of the kernel's state: the folded projection saved at intervals, so a restart folds
 * only the log after the newest snapshot instead of the whole history, and `replay state --to`
 * starts its time travel from the nearest one.
 *
 * A snapshot is never trusted on its own word. It names the sequence and chain hash of the entry
 * it was taken after, and the kernel signs (sequence, chain hash, sha256 of the bytes) with its
 * key. A loader takes it only when the signature is the kernel's, the log's entry at that sequence
 * still has that hash, and the bytes hash to what was signed; otherwise it is skipped and the
 * state is folded from further back (in the end, from the start). `replay state` decodes every
 * snapshot it passes and compares its state digest with a fold from the start: the check that
 * encoding and decoding lose nothing, kept off the kernel's start-up and save paths (on a 64k-event
 * state a digest costs about as much as decoding).
 *
 * Stored in LMDB under `<data>/kernel/snapshots`, keyed by sequence, newest few kept.
 */
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { open, type Database, type RootDatabase } from "lmdb";
import { Packr } from "msgpackr";
import { ErrorCode, MaxwellError, type BudgetLimits } from "../../src/protocol/mod.js";
import { Budgets, type BudgetUsage } from "./budget.js";
import type { KernelState } from "./state.js";

/** What is kept with each snapshot, besides its bytes. */
export interface SnapshotInfo {
  /** Sequence of the last event folded into it. */
  seq: number;
  /** Chain hash of that entry. */
  hash: string;
  /** Events folded into it (state.events). */
  events: number;
  /** sha256 of the encoded state. */
  bytesHash: string;
  /** Size of the encoded state. */
  bytes: number;
  /** Kernel key that signed it, and the signature over snapshotMessage(). */
  key: string;
  sig: string;
  /** Wall clock when it was taken (ms since the epoch). */
  at: number;
}

interface StoredSnapshot {
  info: SnapshotInfo;
  state: Uint8Array;
}

/** A snapshot that passed every check, decoded. */
export interface LoadedSnapshot {
  info: SnapshotInfo;
  state: KernelState;
}

/** Why a stored snapshot was passed over. */
export interface SkippedSnapshot {
  seq: number;
  reason: string;
}

/** The message a snapshot's signature covers. */
export function snapshotMessage(info: Pick<SnapshotInfo, "seq" | "hash" | "bytesHash">): string {
  return `maxwell-snapshot:v1:${info.seq}:${info.hash}:${info.bytesHash}`;
}

// Records (shared structures) make a million same-shaped entries compact and quick to read back;
// undefined survives the round trip, so the state's digest does too.
const packr = new Packr({ useRecords: true, moreTypes: true, int64AsType: "number" });

/** The state as plain data: Maps as entry arrays, in insertion order (eviction and digests depend on it). */
export function encodeState(state: KernelState): Uint8Array {
  return packr.pack({
    identities: [...state.identities],
    syscalls: [...state.syscalls],
    deliveries: [...state.deliveries],
    pending: [...state.pending],
    tools: [...state.tools],
    effects: [...state.effects],
    approvals: [...state.approvals],
    agentLabels: [...state.agentLabels],
    blobs: [...state.blobs],
    budgetLimits: [...state.budgets.limits],
    budgetUsage: [...state.budgets.usage],
    policySet: state.policySet,
    kernelKey: state.kernelKey,
    head: state.head,
    lastCheckpoint: state.lastCheckpoint,
    events: state.events,
  });
}

type Encoded = {
  [K in "identities" | "syscalls" | "deliveries" | "pending" | "tools" | "effects" | "approvals" | "agentLabels" | "blobs"]: KernelState[K] extends Map<infer A, infer B> ? [A, B][] : never;
} & {
  budgetLimits: [string, BudgetLimits][];
  budgetUsage: [string, BudgetUsage][];
  policySet: string | undefined;
  kernelKey: string | undefined;
  head: { seq: number; hash: string };
  lastCheckpoint: number;
  events: number;
};

/** Inverse of encodeState. Throws `internal` on bytes that are not a snapshot. */
export function decodeState(bytes: Uint8Array): KernelState {
  let e: Encoded;
  try {
    e = packr.unpack(bytes) as Encoded;
  } catch (err) {
    throw new MaxwellError(ErrorCode.Internal, `snapshot cannot be decoded: ${(err as Error).message}`, { cause: err });
  }
  if (typeof e !== "object" || e === null || !Array.isArray(e.syscalls) || typeof e.head?.seq !== "number") {
    throw new MaxwellError(ErrorCode.Internal, "snapshot does not hold a kernel state");
  }
  const budgets = new Budgets();
  for (const [k, v] of e.budgetLimits) budgets.limits.set(k, v);
  budgets.restoreUsage(e.budgetUsage);
  return {
    identities: new Map(e.identities),
    syscalls: new Map(e.syscalls),
    deliveries: new Map(e.deliveries),
    pending: new Map(e.pending),
    tools: new Map(e.tools),
    effects: new Map(e.effects),
    approvals: new Map(e.approvals),
    agentLabels: new Map(e.agentLabels),
    blobs: new Map(e.blobs),
    budgets,
    policySet: e.policySet,
    kernelKey: e.kernelKey,
    head: e.head,
    lastCheckpoint: e.lastCheckpoint,
    events: e.events,
  };
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** How a snapshot store checks what it loads. */
export interface SnapshotChecks {
  /** The public key snapshots must be signed by (the kernel's). */
  key: string;
  verify: (publicKey: string, message: string, signatureBase64: string) => boolean;
  /** The chain hash of the log's entry at `seq`, or undefined when the log has no such entry. */
  hashAt: (seq: number) => Promise<string | undefined>;
}

/** The kernel's snapshots in LMDB. */
export class SnapshotStore {
  private constructor(
    private readonly env: RootDatabase,
    private readonly db: Database<StoredSnapshot, number>,
    private readonly keep: number,
  ) {}

  static open(dir: string, keep = 4): SnapshotStore {
    mkdirSync(dir, { recursive: true });
    const env = open({ path: dir, compression: false });
    const db = env.openDB<StoredSnapshot, number>("snapshots", { encoding: "msgpack" });
    return new SnapshotStore(env, db, Math.max(1, keep));
  }

  /**
   * Encodes, signs and stores the state as it is now (synchronously captured: the caller's state
   * may move on while the write completes), then drops all but the newest `keep`.
   */
  async save(state: KernelState, signer: { key: string; sign: (message: string) => string }): Promise<SnapshotInfo> {
    const bytes = encodeState(state);
    const base = { seq: state.head.seq, hash: state.head.hash, bytesHash: sha256(bytes) };
    const info: SnapshotInfo = { ...base, events: state.events, bytes: bytes.length, key: signer.key, sig: signer.sign(snapshotMessage(base)), at: Date.now() };
    await this.db.put(info.seq, { info, state: bytes });
    const seqs = this.list().map((s) => s.seq);
    for (const seq of seqs.slice(0, Math.max(0, seqs.length - this.keep))) await this.db.remove(seq);
    return info;
  }

  /** Every stored snapshot's description, oldest first. */
  list(): SnapshotInfo[] {
    const out: SnapshotInfo[] = [];
    for (const { value } of this.db.getRange()) out.push(value.info);
    return out;
  }

  /**
   * The newest snapshot at or before `atOrBefore` that passes every check, decoded; with the ones
   * passed over and why. Undefined when none passes.
   */
  async load(checks: SnapshotChecks, atOrBefore = Number.MAX_SAFE_INTEGER): Promise<{ loaded?: LoadedSnapshot; skipped: SkippedSnapshot[] }> {
    const skipped: SkippedSnapshot[] = [];
    const candidates = this.list()
      .filter((s) => s.seq <= atOrBefore)
      .reverse();
    for (const info of candidates) {
      const opened = await this.open(info, checks);
      if ("state" in opened) return { loaded: { info, state: opened.state }, skipped };
      skipped.push({ seq: info.seq, reason: opened.reason });
    }
    return { skipped };
  }

  /** The snapshot at `seq` decoded, if it passes every check; else why not. */
  async opened(seq: number, checks: SnapshotChecks): Promise<{ state: KernelState } | { reason: string }> {
    const info = this.db.get(seq)?.info;
    return info ? this.open(info, checks) : { reason: "no such snapshot" };
  }

  private async open(info: SnapshotInfo, checks: SnapshotChecks): Promise<{ state: KernelState } | { reason: string }> {
    if (info.key !== checks.key) return { reason: `signed by ${info.key}, not by this kernel's key` };
    if (!checks.verify(info.key, snapshotMessage(info), info.sig)) return { reason: "its signature does not verify" };
    const hash = await checks.hashAt(info.seq);
    if (hash === undefined) return { reason: `the log has no entry #${info.seq}` };
    if (hash !== info.hash) return { reason: `the log's entry #${info.seq} is not the one it was taken after` };
    const stored = this.db.get(info.seq);
    if (!stored) return { reason: "removed while loading" };
    if (sha256(stored.state) !== info.bytesHash) return { reason: "its bytes do not have the hash it was signed with" };
    try {
      const state = decodeState(stored.state);
      if (state.head.seq !== info.seq || state.head.hash !== info.hash) return { reason: "the state inside names another head" };
      return { state };
    } catch (err) {
      return { reason: (err as Error).message };
    }
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}
