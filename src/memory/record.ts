/**
 * What a memory record is, and the rules every piece of one must satisfy before it is stored:
 * keys, tags, labels, provenance, values, vectors, times. Each rule throws a `bad_request`
 * MaxwellError naming the field and the limit, so bad input never reaches LMDB and never
 * crashes the service (promise 7).
 */
import { ErrorCode, MaxwellError, encode, isName } from "../protocol/mod.js";
import type { NamespaceId } from "./namespace.js";

/** Limits on everything a caller can hand the store. */
export const MemoryLimits = {
  /** Largest value, measured as its msgpack encoding. */
  maxValueBytes: 64 * 1024,
  /** Largest explicit search text, in UTF-8 bytes. */
  maxTextBytes: 64 * 1024,
  /** Longest key, in UTF-8 bytes (LMDB keys are at most 1978 bytes with the namespace). */
  maxKeyBytes: 512,
  maxTags: 32,
  maxTagLength: 64,
  maxLabels: 64,
  maxLabelLength: 128,
  /** Longest `causedBy` event id. */
  maxEventIdLength: 128,
  /** Deepest nesting inside a value. */
  maxValueDepth: 32,
  maxDimension: 4096,
  /** Largest `k` of a search and `limit` of a range read. */
  maxK: 1000,
  maxQueryLength: 4096,
  /** Longest TTL: 100 years. */
  maxTtlMs: 100 * 365 * 86_400_000,
  /** Latest time a record may carry: the last millisecond of year 9999. */
  maxTime: 253_402_300_799_999,
} as const;

/** The two shapes of record. */
export const RecordKind = {
  /** Key/value: one current version per key, overwritten in place, compare-and-set. */
  Value: "kv",
  /** Episodic: append-only, keyed by time, read by time range. */
  Episode: "episode",
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

const recordKinds: ReadonlySet<string> = new Set(Object.values(RecordKind));

/** Plain msgpack data: what a record value may hold. */
export type MemoryValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | Date
  | MemoryValue[]
  | { [key: string]: MemoryValue };

/**
 * Where a record came from. Set by the kernel from the authenticated event that caused the
 * write, never by the agent; returned with every read so a record derived from untrusted input
 * stays marked as such wherever it travels.
 */
export interface Provenance {
  /** The actor whose syscall wrote the record. */
  writer: string;
  /** On whose behalf the write ran. */
  principal: string;
  /** Id of the log event that caused the write. */
  causedBy: string;
  /** Information-flow labels of what the record was derived from (sorted, unique). */
  labels: string[];
}

/** A record as every read returns it. */
export interface MemoryRecord {
  namespace: NamespaceId;
  kind: RecordKind;
  /** The caller's key (kv) or the assigned, time-ordered episode id. */
  key: string;
  /** Monotonic: the namespace's revision when this record was written. */
  version: number;
  /** Write time, ms since the epoch: the time of the causing event. */
  at: number;
  /** When the record stops being visible (ms since the epoch); absent = never. */
  expiresAt?: number;
  /** Caller-chosen tags for filtering searches (sorted, unique). */
  tags: string[];
  /** Explicit search text; absent = the value's strings are indexed. */
  text?: string;
  value: MemoryValue;
  provenance: Provenance;
  /** The embedding supplied with the record (float32 precision). */
  vector?: number[];
}

function bad(message: string, field: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message, { detail: { field } });
}

const CONTROL = /[\p{Cc}\p{Zl}\p{Zp}]/u;
/** A lone surrogate: not encodable as UTF-8, so it would not survive a round trip. */
const LONE_SURROGATE = /\p{Cs}/u;
function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * A name-like string: a record key, tag or label. No control characters, no path separators
 * (`/`, `\`), no wildcards (`*`, `>`, `?`), well-formed Unicode, bounded length.
 */
function checkToken(value: unknown, field: string, maxLength: number, unit: "characters" | "bytes"): string {
  if (typeof value !== "string") throw bad(`invalid ${field}: expected a string, got ${value === null ? "null" : typeof value}`, field);
  const shown = JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (value.length === 0) throw bad(`invalid ${field} "": it is empty`, field);
  const length = unit === "bytes" ? utf8Length(value) : value.length;
  if (length > maxLength) throw bad(`invalid ${field} ${shown}: it is ${length} ${unit}; the limit is ${maxLength}`, field);
  if (CONTROL.test(value)) throw bad(`invalid ${field} ${shown}: control characters are not allowed`, field);
  if (LONE_SURROGATE.test(value)) throw bad(`invalid ${field} ${shown}: it is not well-formed Unicode`, field);
  if (/[/\\]/.test(value)) throw bad(`invalid ${field} ${shown}: path separators ('/', '\\') are not allowed`, field);
  if (/[*>?]/.test(value)) throw bad(`invalid ${field} ${shown}: wildcards ('*', '>', '?') are not allowed`, field);
  return value;
}

/** Validates a record key. */
export function checkKey(value: unknown, field = "key"): string {
  return checkToken(value, field, MemoryLimits.maxKeyBytes, "bytes");
}

/** Validates a list of tags; returns them sorted and without repeats. */
export function checkTags(value: unknown, field = "tags"): string[] {
  return checkTokenList(value, field, MemoryLimits.maxTags, MemoryLimits.maxTagLength);
}

/** Validates a list of labels; returns them sorted and without repeats. */
export function checkLabels(value: unknown, field = "labels"): string[] {
  return checkTokenList(value, field, MemoryLimits.maxLabels, MemoryLimits.maxLabelLength);
}

function checkTokenList(value: unknown, field: string, maxItems: number, maxLength: number): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw bad(`invalid ${field}: expected an array of strings`, field);
  if (value.length > maxItems) throw bad(`invalid ${field}: ${value.length} entries; the limit is ${maxItems}`, field);
  const items = value.map((item: unknown) => checkToken(item, `${field} entry`, maxLength, "characters"));
  return [...new Set(items)].sort();
}

/** Validates a record kind. */
export function checkKind(value: unknown): RecordKind {
  if (typeof value !== "string" || !recordKinds.has(value)) {
    throw bad(`invalid kind ${JSON.stringify(value)}: expected "kv" or "episode"`, "kind");
  }
  return value as RecordKind;
}

const EVENT_ID = /^[A-Za-z0-9._:-]+$/;

/** Validates provenance; labels come back sorted and without repeats. */
export function checkProvenance(value: unknown): Provenance {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw bad("invalid provenance: expected { writer, principal, causedBy, labels }", "provenance");
  }
  const p = value as Record<string, unknown>;
  for (const field of ["writer", "principal"] as const) {
    if (!isName(p[field])) {
      throw bad(`invalid provenance.${field} ${JSON.stringify(p[field])}: expected an identity name`, `provenance.${field}`);
    }
  }
  const causedBy = p["causedBy"];
  if (typeof causedBy !== "string" || causedBy.length === 0 || causedBy.length > MemoryLimits.maxEventIdLength || !EVENT_ID.test(causedBy)) {
    throw bad(`invalid provenance.causedBy ${JSON.stringify(causedBy)}: expected an event id`, "provenance.causedBy");
  }
  return {
    writer: p["writer"] as string,
    principal: p["principal"] as string,
    causedBy,
    labels: checkLabels(p["labels"], "provenance.labels"),
  };
}

/**
 * Validates a value and returns its msgpack encoding (whose length is what the size limit
 * counts). Plain data only: no `undefined`, functions, class instances, sparse arrays, lone
 * surrogates or `__proto__` keys, which msgpack would drop, mangle or refuse to round-trip.
 */
export function checkValue(value: unknown): Uint8Array {
  checkPlain(value, 0, "value");
  let bytes: Uint8Array;
  try {
    bytes = encode(value);
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, "invalid value: it cannot be encoded as msgpack", { cause: err, detail: { field: "value" } });
  }
  if (bytes.length > MemoryLimits.maxValueBytes) {
    throw bad(`value too large: ${bytes.length} bytes encoded; the limit is ${MemoryLimits.maxValueBytes}`, "value");
  }
  return bytes;
}

function checkPlain(value: unknown, depth: number, path: string): void {
  if (value === null || typeof value === "boolean" || typeof value === "number") return;
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw bad(`invalid value: ${path} is not well-formed Unicode`, "value");
    return;
  }
  if (typeof value !== "object") throw bad(`invalid value: ${path} is ${typeof value}; only plain data is stored`, "value");
  if (depth >= MemoryLimits.maxValueDepth) throw bad(`invalid value: nested deeper than ${MemoryLimits.maxValueDepth}`, "value");
  if (value instanceof Uint8Array || value instanceof Date) return;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) throw bad(`invalid value: ${path}[${i}] is a hole`, "value");
      checkPlain(value[i], depth + 1, `${path}[${i}]`);
    }
    return;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) throw bad(`invalid value: ${path} is not a plain object`, "value");
  for (const key of Object.keys(value)) {
    if (key === "__proto__") throw bad(`invalid value: ${path} has a "__proto__" key`, "value");
    if (LONE_SURROGATE.test(key)) throw bad(`invalid value: a key of ${path} is not well-formed Unicode`, "value");
    checkPlain((value as Record<string, unknown>)[key], depth + 1, `${path}.${key}`);
  }
}

/** Validates explicit search text. */
export function checkText(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw bad("invalid text: expected a string", "text");
  if (LONE_SURROGATE.test(value)) throw bad("invalid text: it is not well-formed Unicode", "text");
  const bytes = utf8Length(value);
  if (bytes > MemoryLimits.maxTextBytes) throw bad(`text too large: ${bytes} bytes; the limit is ${MemoryLimits.maxTextBytes}`, "text");
  return value;
}

/**
 * Validates an embedding: 1..maxDimension finite numbers, not all zero. Returns it at float32
 * precision (what is stored), so a value that overflows float32 is refused as well.
 */
export function checkVector(value: unknown, field = "vector"): Float32Array {
  if (!Array.isArray(value) && !(value instanceof Float32Array) && !(value instanceof Float64Array)) {
    throw bad(`invalid ${field}: expected an array of numbers`, field);
  }
  const length = value.length;
  if (length === 0 || length > MemoryLimits.maxDimension) {
    throw bad(`invalid ${field}: dimension ${length}; expected 1-${MemoryLimits.maxDimension}`, field);
  }
  const out = new Float32Array(length);
  let norm = 0;
  for (let i = 0; i < length; i++) {
    const x: unknown = value[i];
    if (typeof x !== "number") throw bad(`invalid ${field}: element ${i} is not a number`, field);
    const f = Math.fround(x);
    if (!Number.isFinite(f)) throw bad(`invalid ${field}: element ${i} is ${x}; only finite float32 numbers are allowed`, field);
    out[i] = f;
    norm += f * f;
  }
  if (norm === 0) throw bad(`invalid ${field}: the zero vector has no direction`, field);
  return out;
}

/** Validates a time in ms since the epoch. */
export function checkTime(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > MemoryLimits.maxTime) {
    throw bad(`invalid ${field} ${JSON.stringify(value)}: expected integer milliseconds since the epoch`, field);
  }
  return value;
}

/** Validates a TTL in ms. */
export function checkTtl(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1 || value > MemoryLimits.maxTtlMs) {
    throw bad(`invalid ttlMs ${JSON.stringify(value)}: expected an integer from 1 to ${MemoryLimits.maxTtlMs}`, "ttlMs");
  }
  return value;
}

/** Validates an expected version for compare-and-set: 0 means "must not exist". */
export function checkExpectedVersion(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw bad(`invalid expectedVersion ${JSON.stringify(value)}: expected a non-negative integer (0 = must not exist)`, "expectedVersion");
  }
  return value;
}

/** Validates a search `k` or a range `limit`: 1..maxK. */
export function checkCount(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1 || value > MemoryLimits.maxK) {
    throw bad(`invalid ${field} ${JSON.stringify(value)}: expected an integer from 1 to ${MemoryLimits.maxK}`, field);
  }
  return value;
}

/** Width of the time and version parts of an episode id: fixed, so ids sort by time. */
const TIME_DIGITS = 15;
const VERSION_DIGITS = 16;

/** The id of the episode written at `at` with `version`: sorts by time, then by write order. */
export function episodeId(at: number, version: number): string {
  return `${episodeTimePrefix(at)}-${String(version).padStart(VERSION_DIGITS, "0")}`;
}

/** The part of an episode id that encodes its time: ids of episodes at or after `at` sort at or after it. */
export function episodeTimePrefix(at: number): string {
  return String(at).padStart(TIME_DIGITS, "0");
}

const EPISODE_ID = new RegExp(`^(\\d{${TIME_DIGITS}})-(\\d{${VERSION_DIGITS}})$`);

/** The time and version an episode id encodes, or undefined if it is not one. */
export function parseEpisodeId(id: string): { at: number; version: number } | undefined {
  const m = EPISODE_ID.exec(id);
  return m === null ? undefined : { at: Number(m[1]), version: Number(m[2]) };
}
