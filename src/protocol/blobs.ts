/**
 * Large payloads by content hash. An effect's big parts (a model call's long messages, system
 * prompt and tool list; a large tool or model result) are not written inside the effect's event:
 * each is written once as a `blob` entry of the log (its msgpack bytes and their sha256), and the
 * event names it by hash and sequence in its `blobs` field, with `null` left at its place.
 *
 * Why in the log and not beside it: a blob is chained, covered by the signed checkpoints,
 * exported, forked and verified like every other entry, so nothing about the record changes.
 * Why by hash: an agent resends its whole conversation on every model call, so inline the log
 * would grow with the square of a conversation's length; by hash, each message is stored once
 * and every later call names it (the kernel remembers which hashes it has stored, see state.ts).
 * Events stay small, so folding, indexing and auditing them does not read the payloads.
 *
 * Only the kernel writes `blobs` (at the event's top level, never inside a value), so a value that
 * happens to look like a reference is never mistaken for one.
 */
import { createHash } from "node:crypto";
import { decode, decodeMap, encode } from "./codec.js";
import { ErrorCode, MaxwellError } from "./errors.js";
import { EventType } from "./events.js";

/** Where an externalized part went: the blob's content hash, its log sequence and size. */
export interface BlobRef {
  hash: string;
  seq: number;
  size: number;
}

/** Parts smaller than this stay inline: a blob entry and its reference cost about 300 bytes. */
export const BLOB_MIN_BYTES = 2048;

/** sha256 (hex) of a blob's bytes: its address. */
export function blobHash(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A path into an event: property names and array indexes, written `args/messages/3`. */
export type BlobPath = string;

/** One part of an event to store by hash: where it is, and its bytes. */
export interface BlobPart {
  path: BlobPath;
  bytes: Uint8Array;
  hash: string;
}

function at(value: unknown, key: string): unknown {
  if (Array.isArray(value)) return value[Number(key)];
  if (typeof value === "object" && value !== null) return (value as Record<string, unknown>)[key];
  return undefined;
}

/** Sets the value at `path` in `root` (which must exist up to the last step). */
export function setAtPath(root: unknown, path: BlobPath, value: unknown): void {
  const keys = path.split("/");
  const last = keys.pop() as string;
  const parent = keys.reduce<unknown>((v, key) => at(v, key), root);
  if (Array.isArray(parent)) parent[Number(last)] = value;
  else if (typeof parent === "object" && parent !== null) (parent as Record<string, unknown>)[last] = value;
}

function part(path: BlobPath, value: unknown): BlobPart | undefined {
  if (value === undefined || value === null) return undefined;
  const bytes = encode(value);
  return bytes.length >= BLOB_MIN_BYTES ? { path, bytes, hash: blobHash(bytes) } : undefined;
}

/**
 * The parts of an effect's request worth storing by hash. A model call's messages one by one
 * (each is resent on every later call of the conversation), its system prompt and tool list;
 * any other effect's arguments whole. Memory effects keep theirs: their values are sealed under
 * erasable keys and must stay in their own event.
 */
export function requestParts(kind: string, args: unknown): BlobPart[] {
  if (kind === "mem") return [];
  if (kind === "llm" && typeof args === "object" && args !== null && !Array.isArray(args)) {
    const a = args as Record<string, unknown>;
    const parts: (BlobPart | undefined)[] = [part("args/system", a["system"]), part("args/tools", a["tools"])];
    if (Array.isArray(a["messages"])) a["messages"].forEach((m, i) => parts.push(part(`args/messages/${i}`, m)));
    return parts.filter((p): p is BlobPart => p !== undefined);
  }
  const whole = part("args", args);
  return whole ? [whole] : [];
}

/** The part of an effect's outcome worth storing by hash: a large result, whole (never a memory result). */
export function resultParts(kind: string, result: unknown): BlobPart[] {
  if (kind === "mem") return [];
  const whole = part("result", result);
  return whole ? [whole] : [];
}

/** Copies `event`, leaving `null` at each part's place and naming the blobs in `blobs`. */
export function withBlobRefs<E extends object>(event: E, refs: ReadonlyArray<{ path: BlobPath; ref: BlobRef }>): E & { blobs?: Record<BlobPath, BlobRef> } {
  if (refs.length === 0) return event;
  const copy = structuredClone(event) as E & { blobs?: Record<BlobPath, BlobRef> };
  const blobs: Record<BlobPath, BlobRef> = {};
  for (const { path, ref } of refs) {
    setAtPath(copy, path, null);
    blobs[path] = ref;
  }
  copy.blobs = blobs;
  return copy;
}

/** An event that may name blobs. */
interface WithBlobs {
  blobs?: Record<BlobPath, BlobRef>;
}

/**
 * The value a blob entry holds, checked against the reference that names it: the entry must be a
 * blob of that hash, and its bytes must hash to it. Anything else means the log was altered.
 */
export function blobValue(ref: BlobRef, stored: Uint8Array | undefined): unknown {
  const fail = (why: string): never => {
    throw new MaxwellError(ErrorCode.Internal, `the blob ${ref.hash.slice(0, 12)}… at #${ref.seq} ${why}; run 'maxwell verify'`);
  };
  if (stored === undefined) return fail("is not in the log");
  let entry: Record<string, unknown>;
  try {
    entry = decodeMap(stored);
  } catch {
    return fail("cannot be decoded");
  }
  const data = entry["data"];
  if (entry["type"] !== EventType.Blob || entry["hash"] !== ref.hash || !(data instanceof Uint8Array)) return fail("is not the blob the event names");
  if (blobHash(data) !== ref.hash) return fail("does not hash to its address");
  return decode(data);
}

/**
 * Copies of `events` with every part stored by hash put back in place. Blob entries among the
 * events are used as they are; the others are read with `fetch` (by sequence, all at once).
 */
export async function resolveBlobs<E>(events: readonly E[], fetch: (seqs: number[]) => Promise<ReadonlyArray<{ seq: number; data: Uint8Array }>>, held: ReadonlyMap<number, Uint8Array> = new Map()): Promise<E[]> {
  const wanted = new Set<number>();
  for (const e of events) for (const ref of Object.values((e as WithBlobs).blobs ?? {})) if (!held.has(ref.seq)) wanted.add(ref.seq);
  const bytes = new Map(held);
  if (wanted.size > 0) for (const entry of await fetch([...wanted])) bytes.set(entry.seq, entry.data);
  return events.map((e) => {
    const blobs = (e as WithBlobs).blobs;
    if (!blobs || Object.keys(blobs).length === 0) return e;
    const copy = structuredClone(e);
    for (const [path, ref] of Object.entries(blobs)) setAtPath(copy, path, blobValue(ref, bytes.get(ref.seq)));
    return copy;
  });
}
