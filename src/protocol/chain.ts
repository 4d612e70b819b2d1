/**
 * The hash chain over the log. Each entry's hash covers its subject and its exact stored bytes;
 * each event names the hash of the entry before it in `prev`, and its own stream sequence in
 * `seq`. Editing, removing, reordering or inserting an entry breaks a link; cutting the tail is
 * caught by the signed checkpoints. Verification is a pure fold, usable on a live stream or an
 * exported bundle.
 */
import { createHash } from "node:crypto";
import { decodeMap } from "./codec.js";
import { blobHash, type BlobRef } from "./blobs.js";
import { checkpointMessage, EventType, type LogEvent } from "./events.js";
import { ErrorCode, MaxwellError } from "./errors.js";

/** `prev` of the first entry. */
export const GENESIS_PREV = "0".repeat(64);

/** Hash of one log entry: sha256 over the subject, a newline, and the stored bytes. */
export function entryHash(subject: string, data: Uint8Array): string {
  return createHash("sha256").update(subject).update("\n").update(data).digest("hex");
}

/** The event a stored entry holds; an `internal` error naming the entry when it does not decode. */
export function decodeEntry(entry: StoredEntry): LogEvent {
  try {
    return decodeMap(entry.data) as unknown as LogEvent;
  } catch {
    throw new MaxwellError(ErrorCode.Internal, `log entry #${entry.seq} cannot be decoded (run 'maxwell verify')`);
  }
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
 *
 * A forked log (`maxwell replay fork`) changes keys: its genesis names the parent's kernel key,
 * and a `kernel.fork` event hands over to the fork's. Every checkpoint must be signed by the key
 * in effect where it stands (genesis key before the fork, the fork's after it), and the trusted
 * key must be the one in effect at the end: checkpoints by the parent's key count only when a
 * fork event, itself covered by the trusted key's later checkpoints, hands over to that key.
 * Without a trusted key, only signatures (and the fork's parent key) are checked.
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
  /** The kernel key named by the genesis event, then by each fork event. */
  private keyInEffect: string | undefined;
  /** The first checkpoint signed by another key than the trusted one, unless a fork hands over to it later. */
  private untrusted: ChainProblem | undefined;
  /** Blob entries seen: seq → content hash (blobs.ts), to check the events that name them. */
  private readonly blobs = new Map<number, string>();
  /** First sequence fed: references to blobs before it cannot be checked (a bundle from mid-log). */
  private readonly firstSeq: number;

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
    this.firstSeq = this.expectedSeq;
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
    const blobProblem = this.checkBlobs(entry.seq, event);
    if (blobProblem !== undefined) {
      this.fail(entry.seq, blobProblem);
      return;
    }
    if (event["type"] === EventType.Genesis && typeof event["kernelKey"] === "string") this.keyInEffect ??= event["kernelKey"];
    if (event["type"] === EventType.Fork) {
      const parentKey = event["parentKey"];
      const kernelKey = event["kernelKey"];
      if (typeof parentKey !== "string" || typeof kernelKey !== "string") {
        this.fail(entry.seq, "fork event is malformed");
        return;
      }
      if (this.keyInEffect !== undefined && parentKey !== this.keyInEffect) {
        // Named here rather than at an earlier checkpoint this bad handover would have vindicated.
        this.problem ??= { seq: entry.seq, reason: `fork names parent kernel key ${parentKey}, but the key in effect is ${this.keyInEffect}` };
        return;
      }
      this.keyInEffect = kernelKey;
      if (kernelKey === this.trustedKey) this.untrusted = undefined;
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
      // Without a trusted key only signatures are checked, whoever signed.
      if (this.trustedKey !== undefined && this.keyInEffect !== undefined && key !== this.keyInEffect) {
        this.fail(entry.seq, `checkpoint signed by ${key}, not the kernel key in effect ${this.keyInEffect}`);
        return;
      }
      if (this.trustedKey !== undefined && key !== this.trustedKey) {
        const problem = { seq: entry.seq, reason: `checkpoint signed by ${key}, not the kernel key ${this.trustedKey}` };
        if (this.keyInEffect === undefined) {
          this.fail(problem.seq, problem.reason);
          return;
        }
        // Signed by the parent of a fork, perhaps: fine if a fork hands over to the trusted key later.
        this.untrusted ??= problem;
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
   * A blob entry must hash to its address; an event naming blobs must name, for each part, an
   * earlier blob entry of that hash (when the entry is among those verified).
   */
  private checkBlobs(seq: number, event: Record<string, unknown>): string | undefined {
    if (event["type"] === EventType.Blob) {
      const data = event["data"];
      if (!(data instanceof Uint8Array) || typeof event["hash"] !== "string") return "blob entry is malformed";
      if (blobHash(data) !== event["hash"]) return "blob entry's bytes do not hash to its address";
      this.blobs.set(seq, event["hash"]);
      return undefined;
    }
    const refs = event["blobs"];
    if (refs === undefined) return undefined;
    if (typeof refs !== "object" || refs === null) return "'blobs' is malformed";
    for (const [path, ref] of Object.entries(refs as Record<string, unknown>)) {
      const r = ref as Partial<BlobRef> | null;
      if (typeof r?.seq !== "number" || typeof r.hash !== "string") return `blob reference '${path}' is malformed`;
      if (r.seq >= seq) return `'${path}' names blob #${r.seq}, which is not before it`;
      if (r.seq < this.firstSeq) continue;
      if (this.blobs.get(r.seq) !== r.hash) return `'${path}' names blob ${r.hash.slice(0, 12)}… at #${r.seq}, which is not there`;
    }
    return undefined;
  }

  /**
   * Final report. `expectedLastSeq` is the stream's last sequence as the server reports it, and
   * `anchor` the last checkpoint the kernel saved outside the log: a log shorter than either was
   * truncated.
   */
  finish(expectedLastSeq?: number, anchor?: { upTo: number; head: string }): VerifyReport {
    const lastSeq = this.expectedSeq - 1;
    if (this.untrusted) this.fail(this.untrusted.seq, this.untrusted.reason);
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
    // A checkpoint by an untrusted key that no fork vindicated came first.
    if (this.untrusted && this.untrusted.seq < seq) this.problem ??= this.untrusted;
    this.problem ??= { seq, reason };
  }
}
