/**
 * The msgpack codec at the edge of the wire (promise 7): anything that is not a well-formed
 * msgpack map is refused with a typed `bad_request`, never decoded into something half-valid.
 */
import { describe, expect, it } from "vitest";
import { decode, decodeMap, encode } from "../../src/protocol/codec.js";
import { refusal } from "../support/refusal.js";

describe("codec", () => {
  it("round-trips a map with nested values", () => {
    const value = { id: "s:1", to: "worker", body: { n: 1, list: [1, "two", null, true], big: 2 ** 40, neg: -3.5 } };
    expect(decodeMap(encode(value))).toEqual(value);
  });

  it("encodes maps as plain msgpack maps, not msgpackr records or extensions", () => {
    const bytes = encode({ a: 1 });
    const first = bytes[0] as number;
    // fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf)
    expect((first & 0xf0) === 0x80 || first === 0xde || first === 0xdf).toBe(true);
    expect(bytes).not.toContain(0xd4); // fixext 1: what msgpackr uses for records
  });

  it("encodes an undefined field as nil, which every reader (and the kernel) accepts", () => {
    const bytes = encode({ said: undefined, list: [undefined, 1] });
    expect(Array.from(bytes)).not.toContain(0xd4);
    expect(decode(bytes)).toEqual({ said: null, list: [null, 1] });
  });

  it("refuses an empty payload with bad_request", () => {
    const e = refusal(() => decode(new Uint8Array(0)));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/empty payload/);
  });

  it.each([
    ["a truncated map", [0x81, 0xa1, 0x61]],
    ["a truncated string", [0xa5, 0x61, 0x62]],
    ["trailing bytes after a value", [0x01, 0x02]],
    ["a truncated array header", [0xdc, 0x00]],
  ])("refuses %s as malformed msgpack, keeping the parser's error as the cause", (_what, bytes) => {
    const e = refusal(() => decode(new Uint8Array(bytes)));
    expect(e.code).toBe("bad_request");
    expect(e.message).toBe("payload is not valid msgpack");
    expect(e.cause).toBeInstanceOf(Error);
  });

  it("refuses the reserved byte 0xc1 (never used in msgpack) as malformed msgpack", () => {
    const e = refusal(() => decode(new Uint8Array([0xc1])));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/not valid msgpack/);
  });

  it("refuses a map holding the reserved byte 0xc1 as a value as malformed msgpack", () => {
    // { "a": <0xc1> }
    const e = refusal(() => decodeMap(new Uint8Array([0x81, 0xa1, 0x61, 0xc1])));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/not valid msgpack/);
  });

  it.each([
    ["an array", encode([1, 2])],
    ["a string", encode("hello")],
    ["a number", encode(42)],
    ["nil", encode(null)],
    ["a boolean", encode(true)],
    ["binary", encode(new Uint8Array([1, 2, 3]))],
  ])("refuses %s where a map is required", (_what, bytes) => {
    const e = refusal(() => decodeMap(bytes));
    expect(e.code).toBe("bad_request");
    expect(e.message).toBe("payload must be a msgpack map");
  });

  it("turns the refusal into its wire form with only a code and a message", () => {
    const e = refusal(() => decodeMap(encode([1])));
    expect(e.toWire()).toEqual({ code: "bad_request", message: "payload must be a msgpack map" });
  });
});
