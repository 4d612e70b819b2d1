/**
 * The hash chain's verifier (promise 4): every kind of tampering with stored entries — edits,
 * removals, reordering, insertion, truncation, forged checkpoints — is named at the first entry
 * where it shows.
 */
import { createServer, type KeyPair } from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { ChainVerifier, GENESIS_PREV, entryHash, type StoredEntry, type VerifyReport } from "../../src/protocol/chain.js";
import { decodeMap, encode } from "../../src/protocol/codec.js";
import { EventType, checkpointMessage } from "../../src/protocol/events.js";
import { subjects } from "../../src/protocol/subjects.js";
import { blobHash } from "../../src/protocol/blobs.js";
import { sign, verifySignature } from "../../src/transport/identity.js";

const kernel = createServer();
const intruder = createServer();

type Spec =
  | { subject: string; fields: Record<string, unknown> }
  | { checkpoint: { signer?: KeyPair; key?: string; upTo?: number; head?: string; sig?: string; drop?: "sig" } };

/** Builds a correctly chained log from specs, the way the kernel's appender would. */
function buildLog(specs: Spec[], start: { seq: number; prev: string } = { seq: 1, prev: GENESIS_PREV }): StoredEntry[] {
  const out: StoredEntry[] = [];
  let prev = start.prev;
  let seq = start.seq;
  for (const spec of specs) {
    let subject: string;
    let event: Record<string, unknown>;
    if ("checkpoint" in spec) {
      const c = spec.checkpoint;
      const signer = c.signer ?? kernel;
      const upTo = c.upTo ?? seq - 1;
      const head = c.head ?? prev;
      subject = subjects.logKernel("checkpoint");
      event = {
        v: 1,
        seq,
        prev,
        id: `cp-${seq}`,
        at: 1000 + seq,
        type: EventType.Checkpoint,
        upTo,
        head,
        key: c.key ?? signer.getPublicKey(),
        sig: c.sig ?? sign(signer, checkpointMessage(upTo, head)),
      };
      if (c.drop === "sig") delete event["sig"];
    } else {
      subject = spec.subject;
      event = { v: 1, seq, prev, id: `ev-${seq}`, at: 1000 + seq, ...spec.fields };
    }
    const data = encode(event);
    out.push({ seq, subject, data });
    prev = entryHash(subject, data);
    seq += 1;
  }
  return out;
}

function message(to: string, body: unknown): Spec {
  return { subject: subjects.logInbox(to), fields: { type: EventType.Message, kind: "send", actor: "alice", principal: "alice", to, body } };
}

/** genesis, four messages, a checkpoint over them, two more messages: seqs 1..8. */
function sampleLog(): StoredEntry[] {
  return buildLog([
    { subject: subjects.logKernel("genesis"), fields: { type: EventType.Genesis, kernelKey: kernel.getPublicKey() } },
    message("worker", "one"),
    message("worker", "two"),
    message("coord", "three"),
    message("worker", "four"),
    { checkpoint: {} },
    message("worker", "five"),
    message("coord", "six"),
  ]);
}

function verify(
  entries: StoredEntry[],
  opts: { trusted?: string | null; expectedLastSeq?: number; anchor?: { upTo: number; head: string }; start?: { seq: number; prev: string } } = {},
): VerifyReport {
  const trusted = opts.trusted === null ? undefined : (opts.trusted ?? kernel.getPublicKey());
  const v = new ChainVerifier(trusted, verifySignature, opts.start);
  for (const e of entries) v.add(e);
  return v.finish(opts.expectedLastSeq, opts.anchor);
}

/** Re-encodes one entry with some fields changed, keeping its place (seq, prev) in storage. */
function edited(entry: StoredEntry, change: Record<string, unknown>): StoredEntry {
  return { ...entry, data: encode({ ...decodeMap(entry.data), ...change }) };
}

/**
 * A broken link shows at the altered entry or at the one whose `prev` no longer matches it;
 * either is a precise answer.
 */
function expectBrokenLinkAt(report: VerifyReport, altered: number): void {
  expect(report.ok).toBe(false);
  expect([altered, altered + 1]).toContain(report.problem?.seq);
  expect(report.problem?.reason).toMatch(/prev|altered|link|hash/i);
}

function anchorOf(entries: StoredEntry[], upTo: number): { upTo: number; head: string } {
  const e = entries.find((x) => x.seq === upTo) as StoredEntry;
  return { upTo, head: entryHash(e.subject, e.data) };
}

describe("ChainVerifier", () => {
  it("accepts an intact log and reports its entries, checkpoints and head", () => {
    const log = sampleLog();
    const last = log[log.length - 1] as StoredEntry;
    const report = verify(log, { expectedLastSeq: 8, anchor: anchorOf(log, 5) });
    expect(report.problem).toBeUndefined();
    expect(report).toMatchObject({
      ok: true,
      entries: 8,
      checkpoints: 1,
      checkpointedTo: 5,
      head: entryHash(last.subject, last.data),
      lastSeq: 8,
    });
  });

  it("accepts an empty log", () => {
    expect(verify([], { expectedLastSeq: 0 })).toMatchObject({ ok: true, entries: 0, lastSeq: 0, head: GENESIS_PREV });
  });

  it("detects an edited body at the entry after it", () => {
    const log = sampleLog();
    log[2] = edited(log[2] as StoredEntry, { body: "TWO" });
    expectBrokenLinkAt(verify(log), 3);
  });

  it("detects an edited actor or principal (a forged identity written into the store)", () => {
    for (const change of [{ actor: "mallory" }, { principal: "mallory" }]) {
      const log = sampleLog();
      log[1] = edited(log[1] as StoredEntry, change);
      expectBrokenLinkAt(verify(log), 2);
    }
  });

  it("detects an entry moved to another subject (re-addressed to another agent's inbox)", () => {
    const log = sampleLog();
    log[1] = { ...(log[1] as StoredEntry), subject: subjects.logInbox("coord") };
    expectBrokenLinkAt(verify(log), 2);
  });

  it("detects a single flipped byte in the stored bytes", () => {
    const log = sampleLog();
    const e = log[3] as StoredEntry;
    const data = new Uint8Array(e.data);
    const i = data.lastIndexOf("t".charCodeAt(0)); // inside the body "three"
    data[i] = "T".charCodeAt(0);
    log[3] = { ...e, data };
    expectBrokenLinkAt(verify(log), 4);
  });

  it("detects an edit of the last entry through the checkpoint the kernel saved outside the log", () => {
    const log = sampleLog();
    const anchor = anchorOf(log, 8);
    log[7] = edited(log[7] as StoredEntry, { body: "SIX" });
    expect(verify(log).ok).toBe(true); // nothing after it in the chain to notice
    expect(verify(log, { anchor }).problem).toEqual({ seq: 8, reason: expect.stringMatching(/differs from the kernel's saved checkpoint/) });
  });

  it("detects an edit covered by a signed checkpoint even when the whole chain is re-linked after it", () => {
    const log = sampleLog();
    const originalSig = decodeMap((log[5] as StoredEntry).data)["sig"] as string;
    // The attacker edits seq 3 and recomputes every prev after it, checkpoint included, but
    // cannot sign the new head: all it has is the kernel's old signature.
    const forged = buildLog(
      [message("worker", "two-forged"), message("coord", "three"), message("worker", "four"), { checkpoint: { sig: originalSig } }, message("worker", "five"), message("coord", "six")],
      { seq: 3, prev: entryHash((log[1] as StoredEntry).subject, (log[1] as StoredEntry).data) },
    );
    const report = verify([log[0], log[1], ...forged] as StoredEntry[]);
    expect(report.problem).toEqual({ seq: 6, reason: expect.stringMatching(/signature is invalid/) });
  });

  it("detects a missing entry", () => {
    const log = sampleLog();
    log.splice(2, 1);
    expect(verify(log).problem).toEqual({ seq: 3, reason: expect.stringMatching(/3 is missing/) });
  });

  it("detects a deletion disguised by renumbering the stored entries", () => {
    const log = sampleLog();
    log.splice(2, 1);
    const renumbered = log.map((e, i) => ({ ...e, seq: i + 1 }));
    expect(verify(renumbered).problem).toEqual({ seq: 3, reason: expect.stringMatching(/claims seq 4 but is stored at 3/) });
  });

  it("detects reordered entries", () => {
    const log = sampleLog();
    const [a, b] = [log[2] as StoredEntry, log[3] as StoredEntry];
    log[2] = b;
    log[3] = a;
    expect(verify(log).problem).toEqual({ seq: 3, reason: expect.stringMatching(/3 is missing/) });
  });

  it("detects reordered entries whose storage sequence numbers were swapped too", () => {
    const log = sampleLog();
    const [a, b] = [log[2] as StoredEntry, log[3] as StoredEntry];
    log[2] = { ...b, seq: 3 };
    log[3] = { ...a, seq: 4 };
    expect(verify(log).problem).toEqual({ seq: 3, reason: expect.stringMatching(/claims seq 4 but is stored at 3/) });
  });

  it("detects an inserted entry", () => {
    const log = sampleLog();
    const intruderEntry = buildLog([message("worker", "inserted")], { seq: 4, prev: GENESIS_PREV })[0] as StoredEntry;
    const tampered = [...log.slice(0, 3), intruderEntry, ...log.slice(3).map((e) => ({ ...e, seq: e.seq + 1 }))];
    expectBrokenLinkAt(verify(tampered), 3);
  });

  it("detects a truncated tail against the stream's last sequence", () => {
    const log = sampleLog().slice(0, 6);
    expect(verify(log, { expectedLastSeq: 8 }).problem).toEqual({ seq: 7, reason: expect.stringMatching(/7 is missing.*last seq 8/) });
  });

  it("detects a truncated tail against the kernel's saved checkpoint when the stream itself was cut", () => {
    const log = sampleLog();
    const anchor = anchorOf(log, 8);
    const cut = log.slice(0, 6);
    expect(verify(cut, { expectedLastSeq: 6 }).ok).toBe(true);
    expect(verify(cut, { expectedLastSeq: 6, anchor }).problem).toEqual({ seq: 7, reason: expect.stringMatching(/checkpointed up to 8: truncated/) });
  });

  it("detects stored bytes that are not a msgpack event", () => {
    const log = sampleLog();
    log[4] = { ...(log[4] as StoredEntry), data: new Uint8Array([0x81, 0xa1]) };
    expect(verify(log).problem).toEqual({ seq: 5, reason: expect.stringMatching(/not a msgpack event/) });
  });

  it("keeps the first problem, whatever comes after it", () => {
    const log = sampleLog();
    log.splice(6, 1); // missing 7
    log[2] = edited(log[2] as StoredEntry, { body: "x" }); // breaks at 4, earlier
    const v = new ChainVerifier(kernel.getPublicKey(), verifySignature);
    for (const e of log) v.add(e);
    expect(v.failed).toBe(true);
    expect([3, 4]).toContain(v.finish(8).problem?.seq);
  });

  it("verifies a bundle that starts mid-log from the hash before it", () => {
    const log = sampleLog();
    const before = log[2] as StoredEntry;
    const report = verify(log.slice(3), { start: { seq: 4, prev: entryHash(before.subject, before.data) }, expectedLastSeq: 8 });
    expect(report).toMatchObject({ ok: true, entries: 5, checkpoints: 1, checkpointedTo: 5, lastSeq: 8 });
    const wrongStart = verify(log.slice(3), { start: { seq: 4, prev: GENESIS_PREV } });
    expect(wrongStart.ok).toBe(false);
    expect([3, 4]).toContain(wrongStart.problem?.seq);
  });

  describe("checkpoints", () => {
    const base = (cp: Extract<Spec, { checkpoint: unknown }>["checkpoint"]): StoredEntry[] =>
      buildLog([
        { subject: subjects.logKernel("genesis"), fields: { type: EventType.Genesis, kernelKey: kernel.getPublicKey() } },
        message("worker", "one"),
        message("worker", "two"),
        { checkpoint: cp },
      ]);

    it("refuses a checkpoint whose signature was made by another key under the kernel's name", () => {
      const report = verify(base({ signer: intruder, key: kernel.getPublicKey() }));
      expect(report.problem).toEqual({ seq: 4, reason: expect.stringMatching(/signature is invalid/) });
      expect(report.checkpoints).toBe(0);
    });

    it("refuses a checkpoint signed by a key that is not the kernel's", () => {
      const problem = verify(base({ signer: intruder })).problem;
      expect(problem?.seq).toBe(4);
      expect(problem?.reason).toContain(intruder.getPublicKey());
      expect(problem?.reason).toMatch(/not the kernel key/);
    });

    it("refuses a checkpoint whose signature is garbage", () => {
      expect(verify(base({ sig: "not base64 at all!!" })).problem?.reason).toMatch(/signature is invalid/);
      expect(verify(base({ sig: "" })).problem?.reason).toMatch(/signature is invalid/);
    });

    it("refuses a checkpoint signed over a different position than it claims", () => {
      const log = base({});
      const cp = log[3] as StoredEntry;
      const ev = decodeMap(cp.data);
      // Correctly signed message, but for upTo 2 while claiming upTo 3's head.
      log[3] = { ...cp, data: encode({ ...ev, sig: sign(kernel, checkpointMessage(2, ev["head"] as string)) }) };
      expect(verify(log).problem?.reason).toMatch(/signature is invalid/);
    });

    it("refuses a checkpoint whose head does not match the chain", () => {
      expect(verify(base({ head: "f".repeat(64) })).problem).toEqual({ seq: 4, reason: expect.stringMatching(/head for seq 3 does not match/) });
    });

    it("refuses a malformed checkpoint", () => {
      expect(verify(base({ drop: "sig" })).problem).toEqual({ seq: 4, reason: expect.stringMatching(/malformed/) });
    });

    it("accepts a checkpoint over an earlier entry it can still see", () => {
      const log = buildLog([
        { subject: subjects.logKernel("genesis"), fields: { type: EventType.Genesis, kernelKey: kernel.getPublicKey() } },
        message("worker", "one"),
        message("worker", "two"),
      ]);
      const two = log[1] as StoredEntry;
      const more = buildLog([message("worker", "three"), { checkpoint: { upTo: 2, head: entryHash(two.subject, two.data) } }], {
        seq: 4,
        prev: entryHash((log[2] as StoredEntry).subject, (log[2] as StoredEntry).data),
      });
      expect(verify([...log, ...more])).toMatchObject({ ok: true, checkpoints: 1, checkpointedTo: 2 });
    });

    it("refuses a whole log re-forged and re-signed with the attacker's own key", () => {
      const forged = buildLog([
        { subject: subjects.logKernel("genesis"), fields: { type: EventType.Genesis, kernelKey: intruder.getPublicKey() } },
        message("worker", "one"),
        { checkpoint: { signer: intruder } },
      ]);
      expect(verify(forged).problem?.reason).toMatch(/not the kernel key/);
    });

    it("without a trusted key still checks every checkpoint's signature", () => {
      expect(verify(base({ signer: intruder }), { trusted: null }).ok).toBe(true);
      expect(verify(base({ signer: intruder, key: kernel.getPublicKey() }), { trusted: null }).problem?.reason).toMatch(/signature is invalid/);
    });
  });
});

describe("ChainVerifier and payloads stored by hash", () => {
  const payload = encode("a long model message ".repeat(200));
  const hash = blobHash(payload);
  const blob = (fields: Record<string, unknown> = {}): Spec => ({ subject: subjects.logBlob(), fields: { type: EventType.Blob, hash, size: payload.length, data: payload, ...fields } });
  const naming = (seq: number, named = hash): Spec => ({
    subject: subjects.logEffect("worker"),
    fields: { type: EventType.EffectStarted, actor: "worker", kind: "llm", op: "complete", target: "m", args: { messages: [null] }, blobs: { "args/messages/0": { hash: named, seq, size: payload.length } } },
  });
  const genesis: Spec = { subject: subjects.logKernel("genesis"), fields: { type: EventType.Genesis, kernelKey: kernel.getPublicKey() } };

  it("accepts blobs that hash to their address and events that name them", () => {
    const report = verify(buildLog([genesis, blob(), naming(2), naming(2), { checkpoint: {} }]));
    expect(report.ok).toBe(true);
  });

  it("names a blob entry whose bytes do not hash to its address, even in an intact chain", () => {
    const report = verify(buildLog([genesis, blob({ data: encode("something else") }), naming(2), { checkpoint: {} }]));
    expect(report.problem).toEqual({ seq: 2, reason: expect.stringMatching(/do not hash to its address/) });
  });

  it("names an event that names a blob which is not there", () => {
    const wrongSeq = verify(buildLog([genesis, blob(), message("worker", "x"), naming(3), { checkpoint: {} }]));
    expect(wrongSeq.problem).toEqual({ seq: 4, reason: expect.stringMatching(/which is not there/) });
    const wrongHash = verify(buildLog([genesis, blob(), naming(2, "b".repeat(64)), { checkpoint: {} }]));
    expect(wrongHash.problem?.seq).toBe(3);
    const later = verify(buildLog([genesis, naming(3), blob(), { checkpoint: {} }]));
    expect(later.problem).toEqual({ seq: 2, reason: expect.stringMatching(/not before it/) });
  });

  it("leaves references to blobs before a bundle's first entry unchecked", () => {
    const full = buildLog([genesis, blob(), message("worker", "x"), naming(2), { checkpoint: {} }]);
    const start = { seq: 3, prev: entryHash((full[1] as StoredEntry).subject, (full[1] as StoredEntry).data) };
    expect(verify(full.slice(2), { start }).ok).toBe(true);
  });
});
