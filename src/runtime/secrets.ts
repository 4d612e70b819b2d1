/**
 * The kernel's secret store: named credentials that tools get injected at the moment of a call
 * (by reference, from a manifest's `secrets`), and that no agent, prompt, memory record or log
 * event ever holds. All secrets live in one file encrypted with AES-256-GCM; the key is a separate
 * 0600 file made on first use. The store re-reads the file whenever it changed on disk, so
 * `maxwell secret set` writing it while the kernel runs is seen at the next call.
 *
 * @example
 * ```ts
 * const store = SecretStore.forDataDir(dataDir);     // <data>/kernel/secrets.enc, <data>/keys/secrets.key
 * store.set("db-admin", "correct horse battery staple");
 * store.get("db-admin");                              // the value, decrypted
 * redact(result, store.values());                     // scrub every registered value
 * ```
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { ErrorCode, MaxwellError } from "../protocol/errors.js";
import { assertName } from "../protocol/subjects.js";

const FORMAT = "maxwell-secrets/1";
const ALGORITHM = "aes-256-gcm";
/** Bound to the ciphertext, so the file cannot be swapped for another format's GCM blob. */
const AAD = Buffer.from(FORMAT, "utf8");
const KEY_BYTES = 32;
const IV_BYTES = 12;
/** Largest value a secret may hold: credentials, certificates and private keys, not files. */
export const MAX_SECRET_BYTES = 64 * 1024;

/** Where a data directory keeps the encrypted secrets and their key. */
export function secretStorePaths(dataDir: string): { file: string; keyFile: string } {
  return { file: join(dataDir, "kernel", "secrets.enc"), keyFile: join(dataDir, "keys", "secrets.key") };
}

/** The file on disk: everything but `v` and `alg` is base64. */
interface SealedFile {
  v: typeof FORMAT;
  alg: typeof ALGORITHM;
  iv: string;
  tag: string;
  data: string;
}

/** What the file was when it was last read: a rename (how it is written) changes the inode. */
interface Seen {
  ino: number;
  size: number;
  mtimeMs: number;
}

/**
 * Named secrets, encrypted at rest. Names are identity-style (`db-admin`); values are non-empty
 * strings of at most {@link MAX_SECRET_BYTES}. Every method throws a MaxwellError: `bad_request`
 * for an invalid name or value, `internal` when the file fails authentication (it was edited, or
 * the key is not the one it was written with) or cannot be read.
 *
 * Writers (the kernel, the CLI) write a whole new file and rename it into place; two writers at
 * the same instant can lose one's change, never corrupt the file.
 */
export class SecretStore {
  private secrets = new Map<string, string>();
  private seen: Seen | undefined;
  private key: Buffer | undefined;

  constructor(private readonly paths: { file: string; keyFile: string }) {}

  /** The store of a data directory (see {@link secretStorePaths}). */
  static forDataDir(dataDir: string): SecretStore {
    return new SecretStore(secretStorePaths(dataDir));
  }

  /** The secret's value, or undefined when there is no secret by that name. */
  get(name: string): string | undefined {
    assertName(name, "secret name");
    this.refresh();
    return this.secrets.get(name);
  }

  /** Whether a secret by that name exists. */
  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Stores (or replaces) a secret and writes the file. */
  set(name: string, value: string): void {
    assertName(name, "secret name");
    if (typeof value !== "string" || value.length === 0) throw new MaxwellError(ErrorCode.BadRequest, `secret '${name}' must have a non-empty string value`);
    if (Buffer.byteLength(value, "utf8") > MAX_SECRET_BYTES) {
      throw new MaxwellError(ErrorCode.BadRequest, `secret '${name}' is larger than ${MAX_SECRET_BYTES} bytes`);
    }
    this.refresh();
    const next = new Map(this.secrets);
    next.set(name, value);
    this.write(next);
  }

  /** Removes a secret; returns whether there was one. */
  delete(name: string): boolean {
    assertName(name, "secret name");
    this.refresh();
    if (!this.secrets.has(name)) return false;
    const next = new Map(this.secrets);
    next.delete(name);
    this.write(next);
    return true;
  }

  /** The names of all secrets, sorted. Names are not secret; values are. */
  names(): string[] {
    this.refresh();
    return [...this.secrets.keys()].sort();
  }

  /** Every secret value: what the kernel hands to `redact` before recording or delivering. */
  values(): string[] {
    this.refresh();
    return [...this.secrets.values()];
  }

  /** Re-reads the file when it changed on disk since it was last read (or written here). */
  private refresh(): void {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(this.paths.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw unreadable(this.paths.file, err);
      this.secrets = new Map();
      this.seen = undefined;
      return;
    }
    const now: Seen = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
    if (this.seen && this.seen.ino === now.ino && this.seen.size === now.size && this.seen.mtimeMs === now.mtimeMs) return;
    this.secrets = this.open(readFileSync(this.paths.file));
    this.seen = now;
  }

  private open(bytes: Buffer): Map<string, string> {
    const file = this.paths.file;
    let sealed: Partial<SealedFile>;
    try {
      sealed = JSON.parse(bytes.toString("utf8")) as Partial<SealedFile>;
    } catch (err) {
      throw tampered(file, "it is not the JSON the store writes", err);
    }
    if (sealed.v !== FORMAT || sealed.alg !== ALGORITHM || typeof sealed.iv !== "string" || typeof sealed.tag !== "string" || typeof sealed.data !== "string") {
      throw tampered(file, `it is not a ${FORMAT} file`);
    }
    const key = this.loadKey(false);
    if (!key) {
      throw new MaxwellError(ErrorCode.Internal, `secrets file ${file} exists but its key ${this.paths.keyFile} is missing: restore the key, or remove the file and set the secrets again`);
    }
    let plain: Buffer;
    try {
      const decipher = createDecipheriv(ALGORITHM, key, Buffer.from(sealed.iv, "base64"));
      decipher.setAAD(AAD);
      decipher.setAuthTag(Buffer.from(sealed.tag, "base64"));
      plain = Buffer.concat([decipher.update(Buffer.from(sealed.data, "base64")), decipher.final()]);
    } catch (err) {
      throw tampered(file, "it fails authentication: it was modified, or it was written with another key", err);
    }
    const entries = JSON.parse(plain.toString("utf8")) as Record<string, string>;
    plain.fill(0);
    return new Map(Object.entries(entries));
  }

  private write(next: Map<string, string>): void {
    const key = this.loadKey(true) as Buffer;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv(ALGORITHM, key, iv);
    cipher.setAAD(AAD);
    const plain = Buffer.from(JSON.stringify(Object.fromEntries(next)), "utf8");
    const data = Buffer.concat([cipher.update(plain), cipher.final()]);
    plain.fill(0);
    const sealed: SealedFile = { v: FORMAT, alg: ALGORITHM, iv: iv.toString("base64"), tag: cipher.getAuthTag().toString("base64"), data: data.toString("base64") };
    writeAtomically(this.paths.file, JSON.stringify(sealed) + "\n");
    this.secrets = next;
    const st = statSync(this.paths.file);
    this.seen = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
  }

  /** The key, created (mode 0600, folder 0700) when `create` is set and there is none yet. */
  private loadKey(create: boolean): Buffer | undefined {
    if (this.key) return this.key;
    const path = this.paths.keyFile;
    if (existsSync(path)) {
      const key = Buffer.from(readFileSync(path, "utf8").trim(), "base64");
      if (key.length !== KEY_BYTES) throw new MaxwellError(ErrorCode.Internal, `secrets key ${path} is not a ${KEY_BYTES}-byte base64 key`);
      this.key = key;
      return key;
    }
    if (!create) return undefined;
    const key = randomBytes(KEY_BYTES);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // 'wx': if another process made the key a moment ago, use theirs rather than overwrite it.
    try {
      const fd = openSync(path, "wx", 0o600);
      try {
        writeSync(fd, key.toString("base64") + "\n");
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      chmodSync(path, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return this.loadKey(false);
      throw unreadable(path, err);
    }
    this.key = key;
    return key;
  }
}

/** Writes a 0600 file by writing a sibling and renaming it over the target. */
function writeAtomically(path: string, content: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o600);
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or never created
    }
    throw unreadable(path, err);
  }
}

function tampered(file: string, why: string, cause?: unknown): MaxwellError {
  return new MaxwellError(ErrorCode.Internal, `secrets file ${file} cannot be trusted: ${why}. Restore it from a backup, or remove it and set the secrets again`, cause === undefined ? undefined : { cause });
}

function unreadable(path: string, cause: unknown): MaxwellError {
  return new MaxwellError(ErrorCode.Internal, `cannot access ${path}: ${(cause as Error).message}`, { cause });
}
