/**
 * The full-text tokenizer. Deliberately small and deterministic, because its output is stored
 * (postings in LMDB) and must be the same on every replica and every rebuild: Unicode NFKC,
 * lower case, runs of letters, marks and digits, a short English stop-word list, no stemming.
 * Changing any rule here changes what is indexed: bump the store format (layout.ts) with it.
 */
import type { MemoryValue } from "../../src/memory/record.js";

/** Longest term kept; longer runs are cut (a 64 KiB base64 blob is not a word). */
export const MAX_TERM_LENGTH = 64;

const WORD = /[\p{L}\p{M}\p{N}]+/gu;
/** NFKC leaves printable ASCII as it is: most text can skip the normalization pass. */
const NON_ASCII = /[^\u0020-\u007e\t\n\r]/;

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
  const normalized = NON_ASCII.test(text) ? text.normalize("NFKC") : text;
  for (const match of normalized.toLowerCase().matchAll(WORD)) {
    const word = match[0];
    if (STOP_WORDS.has(word)) continue;
    terms.push(word.length > MAX_TERM_LENGTH ? word.slice(0, MAX_TERM_LENGTH) : word);
  }
  return terms;
}

/**
 * Term frequencies of `text`, sorted by term, and the document length in terms. The same terms
 * as {@link tokenize}, counted in one pass (this runs once per record written or rebuilt).
 */
export function termFrequencies(text: string): { terms: [string, number][]; length: number } {
  const counts = new Map<string, number>();
  let length = 0;
  if (text.length > 0) {
    const lower = (NON_ASCII.test(text) ? text.normalize("NFKC") : text).toLowerCase();
    const words = WORD;
    words.lastIndex = 0;
    for (let match = words.exec(lower); match !== null; match = words.exec(lower)) {
      let word = match[0];
      if (STOP_WORDS.has(word)) continue;
      if (word.length > MAX_TERM_LENGTH) word = word.slice(0, MAX_TERM_LENGTH);
      counts.set(word, (counts.get(word) ?? 0) + 1);
      length++;
    }
  }
  // The default sort compares UTF-16 code units: the order the stored rows have always used.
  const keys = [...counts.keys()].sort();
  const terms: [string, number][] = new Array<[string, number]>(keys.length);
  for (let i = 0; i < keys.length; i++) terms[i] = [keys[i] as string, counts.get(keys[i] as string) as number];
  return { terms, length };
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
