/**
 * The hash chain over the log. Each entry's hash covers its subject and its exact stored bytes;
 * each event names the hash of the entry before it in `prev`, and its own stream sequence in
 * `seq`. Editing, removing, reordering or inserting an entry breaks a link; cutting the tail is
 * caught by the signed checkpoints. Verification is a pure fold, usable on a live stream or an
 * exported bundle.
 */
import { createHash } from "node:crypto";
import { decodeMap } from "./codec.js";
import { checkpointMessage, EventType } from "./events.js";

/** `prev` of the first entry. */
export const GENESIS_PREV = "0".repeat(64);

/** Hash of one log entry: sha256 over the subject, a newline, and the stored bytes. */
export function entryHash(subject: string, data: Uint8Array): string {
  return createHash("sha256").update(subject).update("\n").update(data).digest("hex");
}

/** One entry as read back from the stream. */
export interface StoredEntry {
  seq: number;
  subject: string;
  data: Uint8Array;
}

export interface ChainProblem {
  seq: number;
  reason: string;
}

export interface VerifyReport {
  ok: boolean;
  entries: number;
  checkpoints: number;
  /** Sequence of the last entry covered by a valid checkpoint (0 if none). */
  checkpointedTo: number;
  /** Entries after the last checkpoint event: chained but not yet signed. */
  unsigned: number;
  head: string;
  lastSeq: number;
  problem?: ChainProblem;
}

/** Checks an ed25519 signature by a public nkey; supplied by the caller (keys live in transport). */
export type SignatureCheck = (publicKey: string, message: string, signatureBase64: string) => boolean;

/**
 * Incremental verifier. Feed entries in stream order; the first problem sticks.
 * `trustedKey` is the kernel's public key from the data dir: checkpoints by any other key fail.
 */
export class ChainVerifier {
  private expectedSeq = 1;
  private head = GENESIS_PREV;
  private readonly heads = new Map<number, string>();
  private problem: ChainProblem | undefined;
  private entries = 0;
  private checkpoints = 0;
  private checkpointedTo = 0;
  private lastCheckpointSeq = 0;

  constructor(
    private readonly trustedKey: string | undefined,
    private readonly checkSignature: SignatureCheck,
    /** First sequence expected (for bundles that start mid-log) and the hash before it. */
    start?: { seq: number; prev: string },
  ) {
    if (start) {
      this.expectedSeq = start.seq;
      this.head = start.prev;
    }
  }

  get failed(): boolean {
    return this.problem !== undefined;
  }

  add(entry: StoredEntry): void {
    if (this.problem) return;
    if (entry.seq !== this.expectedSeq) {
      this.fail(this.expectedSeq, `event ${this.expectedSeq} is missing (next stored is ${entry.seq})`);
      return;
    }
    let event: Record<string, unknown>;
    try {
      event = decodeMap(entry.data);
    } catch {
      this.fail(entry.seq, "stored bytes are not a msgpack event");
      return;
    }
    if (event["seq"] !== entry.seq) {
      this.fail(entry.seq, `event claims seq ${String(event["seq"])} but is stored at ${entry.seq}`);
      return;
    }
    if (event["prev"] !== this.head) {
      const before = entry.seq - 1;
      this.fail(
        before >= 1 ? before : entry.seq,
        before >= 1
          ? `event #${before} was altered (its hash no longer matches the prev recorded by #${entry.seq}), or #${entry.seq}'s link was`
          : `event #${entry.seq} does not start the chain`,
      );
      return;
    }
    if (event["type"] === EventType.Checkpoint) {
      const upTo = event["upTo"];
      const claimedHead = event["head"];
      const key = event["key"];
      const sig = event["sig"];
      if (typeof upTo !== "number" || typeof claimedHead !== "string" || typeof key !== "string" || typeof sig !== "string") {
        this.fail(entry.seq, "checkpoint is malformed");
        return;
      }
      if (this.trustedKey !== undefined && key !== this.trustedKey) {
        this.fail(entry.seq, `checkpoint signed by ${key}, not the kernel key ${this.trustedKey}`);
        return;
      }
      const known = upTo === entry.seq - 1 ? this.head : this.heads.get(upTo);
      if (known !== claimedHead) {
        this.fail(entry.seq, `checkpoint head for seq ${upTo} does not match the chain`);
        return;
      }
      if (!this.checkSignature(key, checkpointMessage(upTo, claimedHead), sig)) {
        this.fail(entry.seq, "checkpoint signature is invalid");
        return;
      }
      this.checkpoints += 1;
      this.checkpointedTo = Math.max(this.checkpointedTo, upTo);
      this.lastCheckpointSeq = entry.seq;
    }
    this.head = entryHash(entry.subject, entry.data);
    this.heads.set(entry.seq, this.head);
    // Checkpoints refer back only a little; keep the lookup bounded.
    if (this.heads.size > 4096) {
      const oldest = this.heads.keys().next().value;
      if (oldest !== undefined) this.heads.delete(oldest);
    }
    this.entries += 1;
    this.expectedSeq = entry.seq + 1;
  }

  /**
   * Final report. `expectedLastSeq` is the stream's last sequence as the server reports it, and
   * `anchor` the last checkpoint the kernel saved outside the log: a log shorter than either was
   * truncated.
   */
  finish(expectedLastSeq?: number, anchor?: { upTo: number; head: string }): VerifyReport {
    const lastSeq = this.expectedSeq - 1;
    if (!this.problem && expectedLastSeq !== undefined && lastSeq < expectedLastSeq) {
      this.fail(lastSeq + 1, `event ${lastSeq + 1} is missing (stream reports last seq ${expectedLastSeq})`);
    }
    if (!this.problem && anchor !== undefined) {
      if (lastSeq < anchor.upTo) {
        this.fail(lastSeq + 1, `log ends at ${lastSeq} but the kernel checkpointed up to ${anchor.upTo}: truncated`);
      } else {
        const h = this.heads.get(anchor.upTo);
        if (h !== undefined && h !== anchor.head) this.fail(anchor.upTo, "entry differs from the kernel's saved checkpoint");
      }
    }
    const report: VerifyReport = {
      ok: this.problem === undefined,
      entries: this.entries,
      checkpoints: this.checkpoints,
      checkpointedTo: this.checkpointedTo,
      unsigned: lastSeq - (this.lastCheckpointSeq || 0),
      head: this.head,
      lastSeq,
    };
    if (this.problem) report.problem = this.problem;
    return report;
  }

  private fail(seq: number, reason: string): void {
    this.problem ??= { seq, reason };
  }
}
