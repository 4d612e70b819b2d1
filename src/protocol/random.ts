/**
 * Cryptographic randomness for ids, drawn from a pooled buffer so the hot path makes one call to
 * the OS per 4 KiB instead of one per id.
 */
import { randomFillSync } from "node:crypto";

const pool = Buffer.alloc(4096);
let offset = pool.length;

function take(n: number): number {
  if (offset + n > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const at = offset;
  offset += n;
  return at;
}

/** `bytes` random bytes as lowercase hex. */
export function randomHex(bytes: number): string {
  const at = take(bytes);
  return pool.toString("hex", at, at + bytes);
}

/** A random unsigned 32-bit integer. */
export function randomUint32(): number {
  return pool.readUInt32LE(take(4));
}
