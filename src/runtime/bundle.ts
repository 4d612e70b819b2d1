/**
 * Log export bundles: a range of the log as stored, with what a third party needs to check it
 * offline (the format is documented in docs/audit.md). JSON Lines: a header line, then one line
 * per stored entry, `from`..`to`, then the "seal": the entries after `to` up to and including the
 * first signed checkpoint that covers `to` (none when the range itself ends with such a
 * checkpoint). The hash chain alone can be rebuilt by anyone who edits the bytes; the kernel's
 * signature on a checkpoint whose head chains back through every entry is what makes the range
 * tamper-evident, so a bundle whose range no valid checkpoint covers does not verify.
 *
 * Pure: the CLI reads the log and the file; this module builds and checks lines.
 */
import { Buffer } from "node:buffer";
import {
  ChainVerifier,
  EventType,
  GENESIS_PREV,
  decodeMap,
  entryHash,
  type SignatureCheck,
  type StoredEntry,
  type VerifyReport,
} from "../protocol/mod.js";

export const BUNDLE_FORMAT = "maxwell-log-bundle";
export const BUNDLE_VERSION = 1;

/** The first line of a bundle. */
export interface BundleHeader {
  format: typeof BUNDLE_FORMAT;
  version: typeof BUNDLE_VERSION;
  /** First and last sequence of the exported range. */
  from: number;
  to: number;
  /** The kernel's public nkey, as the genesis event names it. */
  kernelKey: string;
  /** When `from` > 1: the hash of the entry before `from`, which the entry at `from` names as `prev`. */
  anchor?: { seq: number; hash: string };
  exportedAt: string;
}

/** Every other line: one stored entry. */
export interface BundleEntry {
  seq: number;
  subject: string;
  /** The stored bytes (msgpack of the event), base64. */
  data: string;
  /** Set on entries after `to`, which only link the range to the checkpoint that signs it. */
  seal?: true;
}

/** The `upTo` of a checkpoint entry; undefined for any other entry. */
function checkpointUpTo(entry: StoredEntry): number | undefined {
  try {
    const e = decodeMap(entry.data);
    return e["type"] === EventType.Checkpoint && typeof e["upTo"] === "number" ? e["upTo"] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Turns stored entries into bundle lines. Feed entries in log order from {@link start}; stop
 * once {@link sealed} (a checkpoint covering the range was written).
 */
export class BundleWriter {
  private anchor: { seq: number; hash: string } | undefined;
  private headerWritten = false;
  private last = 0;
  private done = false;
  /** The last entry of the range that needs a signature over it (checkpoints carry their own). */
  private need = 0;
  /** Sequences missing from the log inside what was exported. */
  readonly gaps: number[] = [];

  constructor(
    private readonly range: { from: number; to: number },
    private readonly kernelKey: string,
    private readonly exportedAt: number,
  ) {
    if (!Number.isInteger(range.from) || !Number.isInteger(range.to) || range.from < 1 || range.to < range.from) {
      throw new RangeError(`bad range ${range.from}..${range.to}`);
    }
  }

  /** The first sequence to read: the entry before `from` (it anchors the chain), or 1. */
  get start(): number {
    return Math.max(1, this.range.from - 1);
  }

  /** Whether a checkpoint covering the range has been written: the bundle is complete. */
  get sealed(): boolean {
    return this.done;
  }

  /** The last sequence written. */
  get lastSeq(): number {
    return this.last;
  }

  /** The lines (without newlines) to write for this entry. */
  add(entry: StoredEntry): string[] {
    if (this.done) return [];
    const { from, to } = this.range;
    if (entry.seq < from) {
      if (entry.seq === from - 1) this.anchor = { seq: entry.seq, hash: entryHash(entry.subject, entry.data) };
      return [];
    }
    const lines: string[] = [];
    if (!this.headerWritten) {
      if (from > 1 && !this.anchor) throw new Error(`entry #${from - 1} is not in the log, so the range cannot be anchored to the chain (run 'maxwell verify')`);
      const header: BundleHeader = { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, from, to, kernelKey: this.kernelKey, exportedAt: new Date(this.exportedAt).toISOString() };
      if (this.anchor) header.anchor = this.anchor;
      lines.push(JSON.stringify(header));
      this.headerWritten = true;
      this.last = from - 1;
      this.need = from - 1;
    }
    for (let s = this.last + 1; s < entry.seq; s++) this.gaps.push(s);
    const line: BundleEntry = { seq: entry.seq, subject: entry.subject, data: Buffer.from(entry.data).toString("base64") };
    if (entry.seq > to) line.seal = true;
    lines.push(JSON.stringify(line));
    this.last = entry.seq;
    const upTo = checkpointUpTo(entry);
    if (entry.seq <= to && upTo === undefined) this.need = entry.seq;
    if (entry.seq >= to && upTo !== undefined && upTo >= this.need) this.done = true;
    return lines;
  }
}

/** The outcome of checking a bundle. */
export interface BundleReport extends VerifyReport {
  from: number;
  to: number;
  /** The key checkpoints had to be signed by. */
  kernelKey: string;
  /** Whether that key came from the verifier (`--key`) rather than from the bundle itself. */
  keyPinned: boolean;
  anchor?: { seq: number; hash: string };
  /** Entries after `to` that link the range to its checkpoint. */
  sealEntries: number;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 1;
}

/**
 * Checks a bundle line by line: the header, each entry's place and bytes along the hash chain from
 * the anchor, each checkpoint's signature and head, and that a valid checkpoint covers the whole
 * range. The first problem sticks and names an entry.
 */
export class BundleVerifier {
  private header: BundleHeader | undefined;
  private chain: ChainVerifier | undefined;
  private problem: { seq: number; reason: string } | undefined;
  private line = 0;
  private lastSeq = 0;
  private sealEntries = 0;
  /** The last entry of the range that is not a checkpoint: a valid checkpoint must cover it. */
  private need = 0;
  private key = "";

  constructor(
    private readonly check: SignatureCheck,
    /** The kernel key the verifier trusts, obtained out of band; without it the bundle's own is used. */
    private readonly pinnedKey?: string,
  ) {}

  get failed(): boolean {
    return this.problem !== undefined || this.chain?.failed === true;
  }

  addLine(text: string): void {
    this.line += 1;
    if (this.failed) return;
    if (text.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.fail(this.lastSeq + 1, `line ${this.line} of the bundle is not JSON`);
      return;
    }
    if (!this.header) {
      this.readHeader(value);
      return;
    }
    if (!isRecord(value) || !isSeq(value["seq"]) || typeof value["subject"] !== "string" || typeof value["data"] !== "string" || !BASE64.test(value["data"])) {
      this.fail(this.lastSeq + 1, `line ${this.line} of the bundle is not an entry ({ seq, subject, data: base64 })`);
      return;
    }
    const entry: StoredEntry = { seq: value["seq"], subject: value["subject"], data: new Uint8Array(Buffer.from(value["data"], "base64")) };
    if (entry.seq === 1) {
      // The genesis event names the kernel key: the bundle's key must be that one.
      try {
        const genesis = decodeMap(entry.data);
        if (genesis["type"] === EventType.Genesis && genesis["kernelKey"] !== this.key) {
          this.fail(1, `the genesis event names kernel key ${String(genesis["kernelKey"])}, not ${this.key}`);
          return;
        }
      } catch {
        // The chain check reports undecodable bytes.
      }
    }
    this.chain?.add(entry);
    if (this.chain?.failed) return;
    this.lastSeq = entry.seq;
    if (entry.seq > this.header.to) this.sealEntries += 1;
    else if (checkpointUpTo(entry) === undefined) this.need = entry.seq;
  }

  finish(): BundleReport {
    const h = this.header;
    if (!h && !this.problem) this.fail(0, "the bundle is empty: no header line");
    const chain = this.chain?.finish();
    const from = h?.from ?? 0;
    const to = h?.to ?? 0;
    if (h && chain?.ok && !this.problem) {
      if (chain.lastSeq < to) {
        this.fail(chain.lastSeq + 1, `event ${chain.lastSeq + 1} is missing (the bundle declares entries #${from}..#${to})`);
      } else if (chain.checkpointedTo < this.need) {
        const first = Math.max(from, chain.checkpointedTo + 1);
        this.fail(first, `events #${first}..#${this.need} are not covered by a signed checkpoint in the bundle (its seal is missing or cut): they could have been rewritten`);
      }
    }
    const report: BundleReport = {
      ok: false,
      entries: chain?.entries ?? 0,
      checkpoints: chain?.checkpoints ?? 0,
      checkpointedTo: chain?.checkpointedTo ?? 0,
      unsigned: chain?.unsigned ?? 0,
      head: chain?.head ?? GENESIS_PREV,
      lastSeq: chain?.lastSeq ?? 0,
      from,
      to,
      kernelKey: this.key,
      keyPinned: this.pinnedKey !== undefined,
      sealEntries: this.sealEntries,
    };
    if (h?.anchor) report.anchor = h.anchor;
    const problem = this.problem ?? chain?.problem;
    if (problem) report.problem = problem;
    report.ok = problem === undefined;
    return report;
  }

  private readHeader(value: unknown): void {
    if (!isRecord(value) || value["format"] !== BUNDLE_FORMAT) {
      this.fail(0, `line 1 is not a ${BUNDLE_FORMAT} header`);
      return;
    }
    if (value["version"] !== BUNDLE_VERSION) {
      this.fail(0, `bundle version ${String(value["version"])} is not supported (this verifier reads version ${BUNDLE_VERSION})`);
      return;
    }
    const { from, to, kernelKey, anchor } = value;
    if (!isSeq(from) || !isSeq(to) || to < from || typeof kernelKey !== "string" || kernelKey.length === 0) {
      this.fail(0, "the bundle header needs from <= to (log sequences) and the kernel key");
      return;
    }
    let prev = GENESIS_PREV;
    if (from > 1) {
      if (!isRecord(anchor) || anchor["seq"] !== from - 1 || typeof anchor["hash"] !== "string" || !HEX64.test(anchor["hash"])) {
        this.fail(from, `the bundle starts at #${from} but has no anchor: the hash of entry #${from - 1} is needed to check the chain from there`);
        return;
      }
      prev = anchor["hash"];
    } else if (anchor !== undefined) {
      this.fail(1, "a bundle starting at #1 has no anchor: its first entry must start the chain");
      return;
    }
    this.header = value as unknown as BundleHeader;
    this.key = this.pinnedKey ?? kernelKey;
    if (this.pinnedKey !== undefined && kernelKey !== this.pinnedKey) {
      this.fail(from, `the bundle names kernel key ${kernelKey}, not the trusted key ${this.pinnedKey}`);
      return;
    }
    this.lastSeq = from - 1;
    this.need = from - 1;
    this.chain = new ChainVerifier(this.key, this.check, { seq: from, prev });
  }

  private fail(seq: number, reason: string): void {
    this.problem ??= { seq, reason };
  }
}
