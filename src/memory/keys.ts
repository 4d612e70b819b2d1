/**
 * Per-namespace encryption keys: how memory values can be erased from an append-only,
 * hash-chained log. The kernel seals every value (and vector) a memory write logs, and every
 * record a read answer logs, with AES-256-GCM under the namespace's key; erasing a namespace
 * destroys the key, so the sealed bytes stay in the log (the chain still verifies) but nothing,
 * replay included, can open them again.
 *
 * Keys live in one directory (`<data>/kernel/memkeys/`, mode 0700), one file per namespace named
 * by the sha256 of the namespace (`<sha256>.key`, mode 0600: a key id and 32 random bytes). A
 * key is created on first use and replaced by a fresh one (a new id) on the first write after an
 * erasure; `<sha256>.erased` lists the ids destroyed. Only the kernel creates and destroys keys;
 * the memory service reads them (the two share the directory in `maxwell up`).
 *
 * Limits, stated plainly: erasure overwrites the key file before unlinking it, but a copy-on-write
 * filesystem, an SSD's remapping, or a backup of the data directory can keep the old bytes; back
 * up `memkeys/` separately from the log, or not at all, if erasure must hold against backups.
 *
 * @example
 * ```ts
 * const keys = NamespaceKeys.forDataDir(dataDir);
 * const box = keys.seal("agent:worker-1", { step: 1 });   // { sealed: "base64…", key: "3f9a…" }
 * keys.open("agent:worker-1", box);                        // { step: 1 }
 * keys.erase("agent:worker-1");                            // the key file is gone
 * keys.open("agent:worker-1", box);                        // throws not_found (erased)
 * ```
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { appendFileSync, closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ErrorCode, MaxwellError, decode, encode } from "../protocol/mod.js";
import { parseNamespace } from "./namespace.js";

/** A sealed value: base64 of (format byte, 12-byte IV, ciphertext, 16-byte tag) and the id of the key that sealed it. */
export interface SealedBox {
  sealed: string;
  key: string;
  /** Set when the value is sealed under its record's own key (erasable on its own), not the namespace's. */
  record?: string;
}

const FORMAT = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[0-9a-f]{32}$/;

interface NamespaceKey {
  id: string;
  key: Buffer;
  /** The additional authenticated data of this namespace and key (see {@link aad}). */
  aad: Buffer;
}

function isSealedBox(value: unknown): value is SealedBox {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v["sealed"] === "string" && typeof v["key"] === "string";
}

/** The key files of a data directory's memory namespaces. */
export class NamespaceKeys {
  private readonly cache = new Map<string, NamespaceKey>();
  /** Namespaces already validated (validation is a handful of regular expressions per call). */
  private readonly valid = new Set<string>();

  /** `dir` is created (mode 0700) on the first key written. */
  constructor(readonly dir: string) {}

  /** The keys of a data directory: `<data>/kernel/memkeys/`. */
  static forDataDir(dataDir: string): NamespaceKeys {
    return new NamespaceKeys(join(dataDir, "kernel", "memkeys"));
  }

  /**
   * msgpack-encodes `value` and seals it under the namespace's key, or with `record` under that
   * record's own key (so the record can be erased alone), creating the key if there is none.
   */
  seal(namespace: string, value: unknown, record?: string): SealedBox {
    const ns = this.scope(namespace, record);
    const k = this.current(ns) ?? this.create(ns);
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", k.key, iv);
    cipher.setAAD(k.aad);
    const body = Buffer.concat([cipher.update(encode(value)), cipher.final()]);
    const out = Buffer.concat([Buffer.from([FORMAT]), iv, body, cipher.getAuthTag()]);
    return record === undefined ? { sealed: out.toString("base64"), key: k.id } : { sealed: out.toString("base64"), key: k.id, record };
  }

  /**
   * Opens a sealed value of `namespace`. Throws `not_found` (detail `erased: true`) when the key
   * that sealed it was erased or is not there, `bad_request` when the box is malformed or was
   * sealed for another namespace or altered.
   */
  open(namespace: string, box: SealedBox): unknown {
    if (!isSealedBox(box)) throw new MaxwellError(ErrorCode.BadRequest, "invalid sealed value: expected { sealed, key }");
    const ns = this.scope(namespace, box.record);
    let k = this.cache.get(ns);
    if (k === undefined || k.id !== box.key) {
      if (!KEY_ID.test(box.key)) throw new MaxwellError(ErrorCode.BadRequest, "invalid sealed value: expected { sealed, key }");
      k = this.load(ns);
    }
    if (k === undefined || k.id !== box.key) {
      throw new MaxwellError(
        ErrorCode.NotFound,
        `the value was sealed under key ${box.key.slice(0, 8)}… of ${describe(ns)}, which ${this.erasedIds(ns).has(box.key) ? "was erased" : "is not in " + this.dir}`,
        { detail: { namespace: namespaceOf(ns), key: box.key, erased: true } },
      );
    }
    const bytes = Buffer.from(box.sealed, "base64");
    if (bytes.length < 1 + IV_BYTES + TAG_BYTES || bytes[0] !== FORMAT) {
      throw new MaxwellError(ErrorCode.BadRequest, "invalid sealed value: unknown format or too short");
    }
    let plain: Buffer;
    try {
      const decipher = createDecipheriv("aes-256-gcm", k.key, bytes.subarray(1, 1 + IV_BYTES));
      decipher.setAAD(k.aad);
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      plain = decipher.update(bytes.subarray(1 + IV_BYTES, bytes.length - TAG_BYTES));
      const rest = decipher.final();
      if (rest.length > 0) plain = Buffer.concat([plain, rest]);
    } catch (err) {
      throw new MaxwellError(ErrorCode.BadRequest, `invalid sealed value for namespace ${ns}: it does not authenticate (altered, or sealed for another namespace)`, { cause: err });
    }
    return decode(plain);
  }

  /**
   * Destroys the namespace's key and every record key filed under it: each file is overwritten,
   * synced and removed, and its id recorded as erased. Returns whether there was any key. Every value sealed under it is
   * unreadable from now on, in every process that has not already cached it (see {@link forget}).
   */
  erase(namespace: string): boolean {
    const ns = parseNamespace(namespace);
    // Every record key of the namespace goes with it.
    const prefix = `${fileName(ns)}-`;
    let any = false;
    if (existsSync(this.dir)) {
      for (const f of readdirSync(this.dir)) {
        if (!f.startsWith(prefix) || !f.endsWith(".key")) continue;
        const record = (JSON.parse(readFileSync(join(this.dir, f), "utf8")) as { record?: unknown }).record;
        if (typeof record === "string" && this.destroy(this.scope(ns, record), ns)) any = true;
      }
    }
    return this.destroy(ns) || any;
  }

  /**
   * Destroys one record's key: that record's values, in the log and anywhere else, can no longer
   * be opened; the rest of the namespace is untouched. Returns whether there was a key.
   */
  eraseRecord(namespace: string, record: string): boolean {
    return this.destroy(this.scope(namespace, record));
  }

  /** Destroys a scope's key; `alsoUnder` (a namespace being erased) records the id there too. */
  private destroy(ns: string, alsoUnder?: string): boolean {
    this.cache.delete(ns);
    const path = this.keyPath(ns);
    const k = this.load(ns);
    this.cache.delete(ns);
    if (k === undefined) return false;
    try {
      const fd = openSync(path, "r+");
      try {
        writeSync(fd, Buffer.alloc(256));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    appendFileSync(this.erasedPath(ns), `${JSON.stringify({ key: k.id, at: Date.now() })}\n`, { mode: 0o600 });
    if (alsoUnder !== undefined) appendFileSync(this.erasedPath(alsoUnder), `${JSON.stringify({ key: k.id, at: Date.now() })}\n`, { mode: 0o600 });
    syncDir(this.dir);
    return true;
  }

  /**
   * Whether a key was erased: with `keyId`, that key; without, the namespace's latest key (true
   * when a key was erased and none was created since).
   */
  isErased(namespace: string, keyId?: string): boolean {
    const ns = parseNamespace(namespace);
    const erased = this.erasedIds(ns);
    if (keyId !== undefined) return erased.has(keyId);
    return erased.size > 0 && this.load(ns) === undefined;
  }

  /** The id of the namespace's current key, if it has one. */
  keyId(namespace: string): string | undefined {
    return this.current(parseNamespace(namespace))?.id;
  }

  /** Drops a cached key (after an erasure another process carried out). */
  forget(namespace: string): void {
    this.cache.delete(namespace);
  }

  private namespace(value: string): string {
    if (this.valid.has(value)) return value;
    const ns = parseNamespace(value);
    if (this.valid.size > 100_000) this.valid.clear();
    this.valid.add(ns);
    return ns;
  }

  /** The key scope of a namespace, or of one record of it. */
  private scope(namespace: string, record: string | undefined): string {
    const ns = this.namespace(namespace);
    if (record === undefined) return ns;
    if (typeof record !== "string" || record.length === 0 || record.length > 1024) throw new MaxwellError(ErrorCode.BadRequest, "invalid sealed value: bad record key");
    return `${ns}${RECORD}${record}`;
  }

  private current(ns: string): NamespaceKey | undefined {
    return this.cache.get(ns) ?? this.load(ns);
  }

  private load(ns: string): NamespaceKey | undefined {
    let text: string;
    try {
      text = readFileSync(this.keyPath(ns), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.cache.delete(ns);
        return undefined;
      }
      throw new MaxwellError(ErrorCode.Unavailable, `cannot read the key of namespace ${ns}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: { id?: unknown; key?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch (err) {
      throw new MaxwellError(ErrorCode.Internal, `the key file of namespace ${ns} is corrupt`, { cause: err });
    }
    const key = typeof parsed.key === "string" ? Buffer.from(parsed.key, "base64") : undefined;
    if (typeof parsed.id !== "string" || !KEY_ID.test(parsed.id) || key?.length !== 32) {
      throw new MaxwellError(ErrorCode.Internal, `the key file of namespace ${ns} is corrupt`);
    }
    const k = { id: parsed.id, key, aad: aad(ns, parsed.id) };
    this.cache.set(ns, k);
    return k;
  }

  /** Creates the namespace's key; if another process created one first, that one wins. */
  private create(ns: string): NamespaceKey {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const k = { id: randomBytes(16).toString("hex"), key: randomBytes(32) };
    const path = this.keyPath(ns);
    const temp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
    const record = ns.includes(RECORD) ? { namespace: namespaceOf(ns), record: ns.slice(ns.indexOf(RECORD) + 1) } : { namespace: ns };
    writeFileSync(temp, `${JSON.stringify({ ...record, id: k.id, key: k.key.toString("base64") })}\n`, { mode: 0o600, flag: "wx" });
    try {
      const fd = openSync(temp, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      // link() fails if the name exists: the file appears complete, and only once.
      linkSync(temp, path);
      syncDir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      unlinkSync(temp);
    }
    const winner = this.load(ns);
    if (winner === undefined) throw new MaxwellError(ErrorCode.Internal, `the key of namespace ${ns} vanished while it was created`);
    return winner;
  }

  private erasedIds(ns: string): Set<string> {
    const path = this.erasedPath(ns);
    if (!existsSync(path)) return new Set();
    const ids = new Set<string>();
    for (const line of readFileSync(path, "utf8").split("\n")) {
      if (line.trim() === "") continue;
      try {
        const id = (JSON.parse(line) as { key?: unknown }).key;
        if (typeof id === "string") ids.add(id);
      } catch {
        // A torn last line (a crash while appending) names nothing.
      }
    }
    return ids;
  }

  private keyPath(ns: string): string {
    return join(this.dir, `${fileName(ns)}.key`);
  }

  private erasedPath(ns: string): string {
    return join(this.dir, `${fileName(ns)}.erased`);
  }
}

/** Separates a namespace from a record key in a key scope (no namespace contains it). */
const RECORD = "\u0000";

/**
 * The file name of a scope's key: sha256 of the namespace, so no name can reach the path; a
 * record's key is filed under its namespace's (`<sha256 ns>-<sha256 record>`), so erasing the
 * namespace finds it.
 */
function fileName(scope: string): string {
  const at = scope.indexOf(RECORD);
  const hash = (text: string): string => createHash("sha256").update(text).digest("hex");
  return at < 0 ? hash(scope) : `${hash(scope.slice(0, at))}-${hash(scope.slice(at + 1))}`;
}

function namespaceOf(scope: string): string {
  const at = scope.indexOf(RECORD);
  return at < 0 ? scope : scope.slice(0, at);
}

function describe(scope: string): string {
  const at = scope.indexOf(RECORD);
  return at < 0 ? `namespace ${scope}` : `record ${JSON.stringify(scope.slice(at + 1))} of namespace ${scope.slice(0, at)}`;
}

/** Binds a sealed value to its namespace and key: it cannot be moved to another namespace. */
function aad(ns: string, keyId: string): Buffer {
  return Buffer.from(`maxwell.memory.v1\u0000${ns}\u0000${keyId}`);
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every platform can fsync a directory; the file's own fsync already happened.
  }
}
