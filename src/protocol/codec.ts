/**
 * msgpack encoding of everything on Maxwell's wire. Plain maps and arrays only (no msgpackr
 * records or extensions), so any language's msgpack library reads it.
 */
import { Packr } from "msgpackr";
import { ErrorCode, MaxwellError } from "./errors.js";

const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: "number" });

/** Encodes a value as msgpack. */
export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes msgpack; throws a `bad_request` MaxwellError on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  if (bytes.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "empty payload: expected a msgpack map");
  try {
    return packr.unpack(bytes);
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, "payload is not valid msgpack", { cause: err });
  }
}

/** Decodes msgpack that must be a map (a plain object). */
export function decodeMap(bytes: Uint8Array): Record<string, unknown> {
  const value = decode(bytes);
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new MaxwellError(ErrorCode.BadRequest, "payload must be a msgpack map");
  }
  return value as Record<string, unknown>;
}
