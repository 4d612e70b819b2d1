/**
 * msgpack encoding of everything on Maxwell's wire. Plain maps and arrays only (no msgpackr
 * records or extensions), so any language's msgpack library reads it.
 */
import { Packr } from "msgpackr";
import { ErrorCode, MaxwellError } from "./errors.js";

// `undefined` (a field a handler left unset) travels as nil, as any msgpack reader expects, not as
// msgpackr's private extension, which every receiver would refuse.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, int64AsType: "number", encodeUndefinedAsNil: true });

/** Encodes a value as msgpack. */
export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Deepest nesting accepted: enough for any real payload, bounded for the checks below. */
const MAX_DEPTH = 64;

/**
 * Whether a decoded value is plain msgpack data (nil, bool, number, string, bin, array, map,
 * timestamp). msgpackr turns the reserved byte 0xc1 and unknown extensions into marker
 * objects instead of failing; those are malformed input here.
 */
function isPlain(value: unknown, depth: number): boolean {
  if (value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean") return true;
  if (typeof value !== "object") return false;
  if (depth > MAX_DEPTH) return false;
  if (value instanceof Uint8Array || value instanceof Date) return true;
  if (Array.isArray(value)) return value.every((item) => isPlain(item, depth + 1));
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in value) if (!isPlain((value as Record<string, unknown>)[key], depth + 1)) return false;
  return true;
}

/** Decodes msgpack; throws a `bad_request` MaxwellError on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  if (bytes.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "empty payload: expected a msgpack map");
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, "payload is not valid msgpack", { cause: err });
  }
  if (!isPlain(value, 0)) {
    throw new MaxwellError(ErrorCode.BadRequest, "payload is not valid msgpack (reserved byte 0xc1, an unknown extension type, or nesting deeper than 64)");
  }
  return value;
}

/** Decodes msgpack that must be a map (a plain object). */
export function decodeMap(bytes: Uint8Array): Record<string, unknown> {
  const value = decode(bytes);
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new MaxwellError(ErrorCode.BadRequest, "payload must be a msgpack map");
  }
  return value as Record<string, unknown>;
}
