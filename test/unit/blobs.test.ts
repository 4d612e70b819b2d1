/**
 * Payloads by content hash (src/protocol/blobs.ts): which parts go to blobs, how events name
 * them, and that a blob is only ever put back when it is the one its reference names.
 */
import { describe, expect, it } from "vitest";
import { BLOB_MIN_BYTES, EVENT_VERSION, EventType, MaxwellError, blobHash, blobValue, encode, requestParts, resolveBlobs, resultParts, withBlobRefs, type BlobRef } from "../../src/protocol/mod.js";

const LONG = "x".repeat(BLOB_MIN_BYTES + 10);

/** The stored bytes of a blob entry for `value`, at `seq`. */
function blobEntry(value: unknown, seq: number): { seq: number; data: Uint8Array; ref: BlobRef } {
  const bytes = encode(value);
  const hash = blobHash(bytes);
  const data = encode({ v: EVENT_VERSION, seq, prev: "0".repeat(64), id: "01JBLOB0000000000000000000", at: 1, type: EventType.Blob, hash, size: bytes.length, data: bytes });
  return { seq, data, ref: { hash, seq, size: bytes.length } };
}

describe("blob parts", () => {
  it("splits a model call into its long messages, system prompt and tools; short ones stay inline", () => {
    const parts = requestParts("llm", { model: "m", max_tokens: 5, system: LONG, messages: [{ role: "user", content: LONG }, { role: "assistant", content: "ok" }, { role: "user", content: LONG }] });
    expect(parts.map((p) => p.path)).toEqual(["args/system", "args/messages/0", "args/messages/2"]);
    // The same message has the same address wherever it appears.
    expect(parts[1]?.hash).toBe(parts[2]?.hash);
  });

  it("takes other effects' arguments and results whole, and never a memory effect's", () => {
    expect(requestParts("tool", { text: LONG }).map((p) => p.path)).toEqual(["args"]);
    expect(requestParts("tool", { text: "short" })).toEqual([]);
    expect(resultParts("tool", { text: LONG }).map((p) => p.path)).toEqual(["result"]);
    expect(requestParts("mem", { value: LONG })).toEqual([]);
    expect(resultParts("mem", { value: LONG })).toEqual([]);
  });

  it("names the blobs at the event's top level and leaves null in place, without touching the original", () => {
    const event = { type: "effect.started", args: { messages: [{ content: LONG }, { content: "hi" }] } };
    const ref = { hash: "a".repeat(64), seq: 7, size: 10 };
    const logged = withBlobRefs(event, [{ path: "args/messages/0", ref }]);
    expect(logged.args.messages[0]).toBeNull();
    expect(logged.args.messages[1]).toEqual({ content: "hi" });
    expect(logged.blobs).toEqual({ "args/messages/0": ref });
    expect(event.args.messages[0]).toEqual({ content: LONG });
  });
});

describe("putting blobs back", () => {
  it("puts every named part back in place, reading what is not at hand", async () => {
    const held = blobEntry({ content: LONG }, 3);
    const fetched = blobEntry(LONG, 4);
    const event = { type: "effect.completed", result: null, args: { messages: [null] }, blobs: { "args/messages/0": held.ref, result: fetched.ref } };
    const asked: number[][] = [];
    const [resolved] = await resolveBlobs([event], async (seqs) => {
      asked.push(seqs);
      return [{ seq: 4, data: fetched.data }];
    }, new Map([[3, held.data]]));
    expect(asked).toEqual([[4]]);
    expect(resolved).toMatchObject({ result: LONG, args: { messages: [{ content: LONG }] } });
    expect(event.result).toBeNull();
  });

  it("refuses a blob that is not the one the reference names", () => {
    const right = blobEntry(LONG, 3);
    const other = blobEntry(`${LONG}!`, 3);
    expect(() => blobValue(right.ref, other.data)).toThrow(MaxwellError);
    expect(() => blobValue(right.ref, other.data)).toThrow(/is not the blob the event names/);
    expect(() => blobValue(right.ref, undefined)).toThrow(/is not in the log/);
  });

  it("refuses a blob entry whose bytes were changed after their hash was taken", () => {
    const bytes = encode(LONG);
    const hash = blobHash(bytes);
    const altered = Buffer.from(bytes);
    altered[altered.length - 1] = "y".charCodeAt(0);
    const data = encode({ v: EVENT_VERSION, seq: 9, prev: "0".repeat(64), id: "01JBLOB0000000000000000000", at: 1, type: EventType.Blob, hash, size: bytes.length, data: altered });
    expect(() => blobValue({ hash, seq: 9, size: bytes.length }, data)).toThrow(/does not hash to its address/);
  });
});
