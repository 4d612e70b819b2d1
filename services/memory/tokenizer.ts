/**
 * The full-text tokenizer. Deliberately small and deterministic, because its output is stored
 * (postings in LMDB) and must be the same on every replica and every rebuild: Unicode NFKC,
 * lower case, runs of letters, marks and digits, a short English stop-word list, no stemming.
 * Changing any rule here changes what is indexed: bump the store format (layout.ts) with it.
 */
import type { MemoryValue } from "./record.js";

/** Longest term kept; longer runs are cut (a 64 KiB base64 blob is not a word). */
export const MAX_TERM_LENGTH = 64;

const WORD = /[\p{L}\p{M}\p{N}]+/gu;

/** Words too common to rank anything; skipping them also keeps posting lists short. */
const STOP_WORDS: ReadonlySet<string> = new Set(
  (
    "a an and are as at be but by for from has have if in into is it its of on or " +
    "that the their then there these they this to was were will with"
  ).split(" "),
);

/** The terms of `text`, in order, with repeats. */
export function tokenize(text: string): string[] {
  const terms: string[] = [];
  if (text.length === 0) return terms;
  for (const match of text.normalize("NFKC").toLowerCase().matchAll(WORD)) {
    const word = match[0];
    if (STOP_WORDS.has(word)) continue;
    terms.push(word.length > MAX_TERM_LENGTH ? word.slice(0, MAX_TERM_LENGTH) : word);
  }
  return terms;
}

/** Term frequencies of `text`, sorted by term, and the document length in terms. */
export function termFrequencies(text: string): { terms: [string, number][]; length: number } {
  const counts = new Map<string, number>();
  const tokens = tokenize(text);
  for (const term of tokens) counts.set(term, (counts.get(term) ?? 0) + 1);
  const terms = [...counts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { terms, length: tokens.length };
}

/**
 * The text a record is searched by: its explicit text when it has one; otherwise its value's
 * strings (not its map keys), depth first, one per line.
 */
export function searchableText(value: MemoryValue, text: string | undefined): string {
  if (text !== undefined) return text;
  const parts: string[] = [];
  collectStrings(value, parts);
  return parts.join("\n");
}

function collectStrings(value: MemoryValue, out: string[]): void {
  if (typeof value === "string") {
    out.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) collectStrings(item, out);
  } else if (typeof value === "object" && value !== null && !(value instanceof Uint8Array) && !(value instanceof Date)) {
    for (const key of Object.keys(value)) collectStrings(value[key] as MemoryValue, out);
  }
}
