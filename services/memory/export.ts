/**
 * Export and import of one namespace as JSON Lines: an open format any tool can read, that
 * round-trips every record exactly (the store's digest of the namespace is the same after an
 * export and an import into an empty namespace).
 *
 * ## Format `maxwell.memory` version 1
 *
 * UTF-8, one JSON object per line, lines end with "\n". The first line is a header:
 *
 * ```json
 * {"format":"maxwell.memory","version":1,"namespace":"agent:worker-1","revision":42,"dimension":384,"at":1767225600000}
 * ```
 *
 * - `namespace`: the namespace exported.
 * - `revision`: the namespace's revision, i.e. the last version it handed out. Import keeps it,
 *   so versions written after an import keep increasing.
 * - `dimension` (optional): the namespace's vector dimension.
 * - `at`: the instant (ms since the epoch) the export was taken; records expired by then are
 *   left out.
 *
 * Every further line is one record, with these fields in this order:
 *
 * | field          | type                       | meaning                                                         |
 * | -------------- | -------------------------- | --------------------------------------------------------------- |
 * | `kind`         | `"kv"` \| `"episode"`      | key/value record or episodic entry                               |
 * | `key`          | string                     | the key; for an episode its id `<at, 15 digits>-<version, 16 digits>` |
 * | `version`      | integer ≥ 1                | the record's version                                             |
 * | `at`           | integer                    | write time, ms since the epoch                                   |
 * | `expiresAt`    | integer, optional          | when the record stops being visible (TTL), ms since the epoch    |
 * | `tags`         | string[]                   | tags, sorted                                                     |
 * | `text`         | string, optional           | explicit search text                                             |
 * | `value`        | any JSON                   | the value, when JSON represents it exactly                       |
 * | `valueMsgpack` | string (base64)            | otherwise: the value's msgpack encoding (binary data, dates, NaN, ±Infinity, -0) |
 * | `provenance`   | object                     | `{writer, principal, causedBy, labels}`: who wrote it, on whose behalf, the causing log event, information-flow labels |
 * | `vector`       | number[], optional         | the embedding, float32 values                                    |
 *
 * Exactly one of `value` and `valueMsgpack` is present. Records come in store key order: all
 * episodes (by time), then key/value records (by key). Import refuses a file with any invalid
 * line, writing nothing, and refuses to import into a namespace that holds records.
 */
import { ErrorCode, MaxwellError, decode, encode } from "../../src/protocol/mod.js";
import { visible, type StoreCore, type WriteTx } from "./core.js";
import { decodeMeta, decodeRecordRow, decodeVectorRow, prefixRange, versionKey, type RecordKey, type RecordRow } from "./layout.js";
import { parseNamespace, type NamespaceId } from "../../src/memory/namespace.js";
import {
  RecordKind,
  checkKey,
  checkKind,
  checkProvenance,
  checkTags,
  checkText,
  checkTime,
  checkValue,
  checkVector,
  episodeId,
  parseEpisodeId,
  type MemoryValue,
} from "../../src/memory/record.js";

export const EXPORT_FORMAT = "maxwell.memory";
export const EXPORT_VERSION = 1;

export interface ImportOptions {
  /** Import into this namespace instead of the one named in the header. */
  namespace?: string;
  /** Log sequence of the causing event, recorded as applied. */
  seq?: number;
}

export interface ImportSummary {
  namespace: NamespaceId;
  records: number;
  revision: number;
}

/** Whether JSON represents `value` exactly (same msgpack bytes after a round trip). */
function jsonExact(value: unknown): boolean {
  if (value === null || typeof value === "boolean" || typeof value === "string") return true;
  if (typeof value === "number") return Number.isFinite(value) && !Object.is(value, -0);
  if (Array.isArray(value)) return value.every(jsonExact);
  if (typeof value === "object" && !(value instanceof Uint8Array) && !(value instanceof Date)) {
    return Object.values(value as Record<string, unknown>).every(jsonExact);
  }
  return false;
}

/** The namespace as JSON Lines, header first; each string is one line ending in "\n". */
export function* exportNamespace(core: StoreCore, namespace: string): Generator<string> {
  for (const { line } of exportLines(core, parseNamespace(namespace), core.now(), undefined)) yield line;
}

/** Where a paged export continues: after this record, at the export's instant. */
export interface ExportCursor {
  at: number;
  kind: RecordKind;
  key: string;
}

/** One page of an export: whole lines (the header on the first page only), and where to go on. */
export interface ExportPage {
  lines: string[];
  /** Absent on the last page. */
  next?: ExportCursor;
}

/**
 * A page of the namespace's export of at most `maxBytes` of lines (at least one line). Pages
 * taken one after another with `next` concatenate to a complete export as of the first page's
 * instant, except that each page reads the store as it is then: a record written between pages
 * may be missing or newer than the header's revision says.
 */
export function exportPage(core: StoreCore, namespace: string, opts: { after?: ExportCursor; maxBytes: number }): ExportPage {
  core.assertOpen();
  const ns = parseNamespace(namespace);
  const after = opts.after;
  if (after !== undefined) {
    checkTime(after.at, "cursor.at");
    checkKind(after.kind);
    if (after.key !== "") checkKey(after.key, "cursor.key");
  }
  const lines: string[] = [];
  let bytes = 0;
  let last: ExportCursor | undefined;
  const at = after?.at ?? core.now();
  for (const { line, kind, key } of exportLines(core, ns, at, after)) {
    const size = Buffer.byteLength(line);
    if (lines.length > 0 && bytes + size > opts.maxBytes) return { lines, next: last ?? { at, kind: RecordKind.Episode, key: "" } };
    lines.push(line);
    bytes += size;
    if (kind !== undefined && key !== undefined) last = { at, kind, key };
  }
  return { lines };
}

/** Export lines in store order, each with the record it came from (none for the header). */
function* exportLines(core: StoreCore, ns: NamespaceId, at: number, after: ExportCursor | undefined): Generator<{ line: string; kind?: RecordKind; key?: string }> {
  core.assertOpen();
  const transaction = core.env.useReadTransaction();
  try {
    if (after === undefined) {
      const meta = decodeMeta(core.tables.meta.get(ns, { transaction }));
      const header: Record<string, unknown> = { format: EXPORT_FORMAT, version: EXPORT_VERSION, namespace: ns, revision: meta.revision };
      if (meta.dimension !== undefined) header["dimension"] = meta.dimension;
      header["at"] = at;
      yield { line: `${JSON.stringify(header)}\n` };
    }
    const range = prefixRange(ns);
    const start = after === undefined || after.key === "" ? range.start : [ns, after.kind, after.key];
    for (const { key, value } of core.tables.records.getRange({ start, end: range.end, transaction })) {
      const [, kind, name] = key as RecordKey;
      if (after !== undefined && kind === after.kind && name === after.key) continue;
      const row = decodeRecordRow(value);
      if (!visible(row.expiresAt, at)) continue;
      const line: Record<string, unknown> = { kind, key: name, version: row.version, at: row.at };
      if (row.expiresAt !== undefined) line["expiresAt"] = row.expiresAt;
      line["tags"] = row.tags;
      if (row.text !== undefined) line["text"] = row.text;
      if (jsonExact(row.value)) line["value"] = row.value;
      else line["valueMsgpack"] = Buffer.from(encode(row.value)).toString("base64");
      line["provenance"] = row.provenance;
      if (row.vector) {
        const bytes = core.tables.vectors.get(versionKey(ns, row.version), { transaction });
        if (bytes !== undefined) line["vector"] = Array.from(decodeVectorRow(bytes).vector);
      }
      yield { line: `${JSON.stringify(line)}\n`, kind, key: name };
    }
  } finally {
    transaction.done();
  }
}

const RECORD_FIELDS: ReadonlySet<string> = new Set([
  "kind", "key", "version", "at", "expiresAt", "tags", "text", "value", "valueMsgpack", "provenance", "vector",
]);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

interface ParsedRecord {
  kind: RecordKind;
  key: string;
  row: RecordRow;
  vector: Float32Array | undefined;
}

interface ParsedHeader {
  namespace: NamespaceId;
  revision: number;
  dimension: number | undefined;
}

function bad(message: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message);
}

function object(text: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, "not valid JSON", { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw bad("expected a JSON object");
  return parsed as Record<string, unknown>;
}

function positiveInteger(value: unknown, field: string, allowZero = false): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw bad(`invalid ${field} ${JSON.stringify(value)}: expected an integer ≥ ${allowZero ? 0 : 1}`);
  }
  return value;
}

function parseHeader(text: string): ParsedHeader {
  const h = object(text);
  if (h["format"] !== EXPORT_FORMAT) throw bad(`not a ${EXPORT_FORMAT} export (format ${JSON.stringify(h["format"])})`);
  if (h["version"] !== EXPORT_VERSION) throw bad(`unsupported ${EXPORT_FORMAT} version ${JSON.stringify(h["version"])}; this build reads ${EXPORT_VERSION}`);
  const dimension = h["dimension"] === undefined ? undefined : positiveInteger(h["dimension"], "dimension");
  return { namespace: parseNamespace(h["namespace"]), revision: positiveInteger(h["revision"], "revision", true), dimension };
}

function parseRecord(text: string, header: ParsedHeader): ParsedRecord {
  const r = object(text);
  for (const field of Object.keys(r)) if (!RECORD_FIELDS.has(field)) throw bad(`unknown field ${JSON.stringify(field)}`);
  const kind = checkKind(r["kind"]);
  const key = checkKey(r["key"]);
  const version = positiveInteger(r["version"], "version");
  if (version > header.revision) throw bad(`version ${version} is above the header's revision ${header.revision}`);
  const at = checkTime(r["at"], "at");
  if (kind === RecordKind.Episode) {
    const id = parseEpisodeId(key);
    if (id === undefined || key !== episodeId(at, version)) throw bad(`episode key ${JSON.stringify(key)} does not match its time and version`);
  }
  const hasValue = "value" in r;
  const hasMsgpack = "valueMsgpack" in r;
  if (hasValue === hasMsgpack) throw bad("expected exactly one of value and valueMsgpack");
  let value: unknown;
  if (hasValue) {
    value = r["value"];
  } else {
    const encoded = r["valueMsgpack"];
    if (typeof encoded !== "string" || !BASE64.test(encoded)) throw bad("invalid valueMsgpack: expected base64");
    value = decode(Buffer.from(encoded, "base64"));
  }
  checkValue(value);
  const row: RecordRow = {
    version,
    at,
    tags: checkTags(r["tags"] ?? []),
    value: value as MemoryValue,
    provenance: checkProvenance(r["provenance"]),
    vector: r["vector"] !== undefined,
  };
  if (r["expiresAt"] !== undefined) {
    const expiresAt = checkTime(r["expiresAt"], "expiresAt");
    if (expiresAt <= at) throw bad(`expiresAt ${expiresAt} is not after at ${at}`);
    row.expiresAt = expiresAt;
  }
  const textField = checkText(r["text"]);
  if (textField !== undefined) row.text = textField;
  let vector: Float32Array | undefined;
  if (r["vector"] !== undefined) {
    vector = checkVector(r["vector"]);
    if (vector.length !== header.dimension) {
      throw bad(`vector has dimension ${vector.length}; the header says ${header.dimension ?? "none"}`);
    }
  }
  // Keep the field order every other write uses (the digest hashes row bytes).
  const ordered: RecordRow = { version: row.version, at: row.at, tags: row.tags, value: row.value, provenance: row.provenance, vector: row.vector };
  if (row.expiresAt !== undefined) ordered.expiresAt = row.expiresAt;
  if (row.text !== undefined) ordered.text = row.text;
  return { kind, key, row: ordered, vector };
}

/** Lines of the input: a whole text, or chunks of one split anywhere (a stream). */
async function* linesOf(input: string | Iterable<string> | AsyncIterable<string>): AsyncGenerator<string> {
  if (typeof input === "string") {
    yield* input.split("\n");
    return;
  }
  let partial = "";
  for await (const chunk of input as AsyncIterable<string>) {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop() as string;
    yield* parts;
  }
  yield partial;
}

/** A validated export: its header and records. */
interface ParsedExport {
  header: ParsedHeader;
  records: ParsedRecord[];
}

/** Validates every line of an export; throws `bad_request` naming the first bad line. */
async function parseExport(input: string | Iterable<string> | AsyncIterable<string>): Promise<ParsedExport> {
  let header: ParsedHeader | undefined;
  const records: ParsedRecord[] = [];
  const keys = new Set<string>();
  const versions = new Set<number>();
  let lineNo = 0;
  for await (const raw of linesOf(input)) {
    lineNo++;
    const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (text.trim() === "") continue;
    try {
      if (header === undefined) {
        header = parseHeader(text);
        continue;
      }
      const record = parseRecord(text, header);
      const id = `${record.kind}\u0000${record.key}`;
      if (keys.has(id)) throw bad(`${record.kind} ${JSON.stringify(record.key)} appears twice`);
      if (versions.has(record.row.version)) throw bad(`version ${record.row.version} appears twice`);
      keys.add(id);
      versions.add(record.row.version);
      records.push(record);
    } catch (err) {
      const e = MaxwellError.from(err, ErrorCode.BadRequest);
      throw new MaxwellError(e.code, `import line ${lineNo}: ${e.message}`, { cause: err, detail: { ...e.detail, line: lineNo } });
    }
  }
  if (header === undefined) throw bad("import: the input is empty (expected a header line)");
  // Version order: every posting an import adds is then an append (see core.ts).
  records.sort((a, b) => a.row.version - b.row.version);
  return { header, records };
}

/** What an import of `input` would write, without writing anything (`bad_request` naming the first bad line). */
export async function checkImport(input: string | Iterable<string> | AsyncIterable<string>, opts: { namespace?: string } = {}): Promise<ImportSummary> {
  const { header, records } = await parseExport(input);
  const ns = opts.namespace === undefined ? header.namespace : parseNamespace(opts.namespace);
  return { namespace: ns, records: records.length, revision: header.revision };
}

/**
 * Imports a namespace export. Every line is validated before anything is written; the import
 * is one commit. The target namespace (the header's, or `opts.namespace`) must hold no records.
 */
export async function importNamespace(
  core: StoreCore,
  input: string | Iterable<string> | AsyncIterable<string>,
  opts: ImportOptions = {},
): Promise<ImportSummary> {
  core.assertOpen();
  const { header, records } = await parseExport(input);
  const ns = opts.namespace === undefined ? header.namespace : parseNamespace(opts.namespace);
  const seq = opts.seq === undefined ? undefined : positiveInteger(opts.seq, "seq", true);

  const plan = importPlan(core, { header, records }, ns);
  const result = await core.write((tx) => {
    const r = plan(tx);
    tx.appliedSeq = seq;
    return r;
  });
  return result;
}

/** An export parsed and checked, ready to be written (by {@link importPlan}). */
export type ParsedImport = ParsedExport;

/** Parses and checks an export without writing anything. */
export function parseImport(input: string | Iterable<string> | AsyncIterable<string>): Promise<ParsedImport> {
  return parseExport(input);
}

/**
 * The write of an import into `ns`, to run inside a store commit: refused (conflict) when the
 * namespace holds records, otherwise every record with its versions, times and provenance.
 */
export function importPlan(core: StoreCore, parsed: ParsedImport, ns: NamespaceId): (tx: WriteTx) => ImportSummary {
  const { header, records } = parsed;
  return (tx) => {
    for (const _ of core.tables.records.getKeys({ ...prefixRange(ns), limit: 1 })) {
      throw new MaxwellError(ErrorCode.Conflict, `namespace ${ns} holds records; erase it before importing into it`, { detail: { namespace: ns } });
    }
    tx.deltas.push({ op: "drop", ns });
    const meta = tx.meta(ns);
    meta.revision = Math.max(meta.revision, header.revision);
    if (header.dimension === undefined) delete meta.dimension;
    else meta.dimension = header.dimension;
    for (const record of records) core.insert(tx, ns, record.kind, record.key, record.row, record.vector);
    return { namespace: ns, records: records.length, revision: meta.revision };
  };
}
