/**
 * A workspace: a folder the file tools may touch, and nothing outside it. Paths are relative to
 * the root. A path is refused when it is absolute, has a `..` component, passes through a symlink
 * that resolves outside the root, or names something that is not a regular file or a folder
 * (FIFOs, sockets, devices). Every component is checked with lstat (and realpath when it is a
 * symlink) on the way down, files are opened with O_NOFOLLOW and O_NONBLOCK (a FIFO cannot hang a
 * read), and the opened descriptor is checked to be the file that was checked, inside the root.
 * Writes go to a new file beside the target and are renamed over it, so a write never follows a
 * symlink and a reader never sees half a file.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, lstat, mkdir, open, readdir, readlink, realpath, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { join, sep } from "node:path";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";

/** Longest relative path accepted, and deepest nesting. */
const MAX_PATH = 4096;
const MAX_DEPTH = 64;

/** What a directory entry is, as `file-list` reports it (symlinks are reported, not followed). */
export const EntryType = { File: "file", Dir: "dir", Symlink: "symlink", Other: "other" } as const;
export type EntryType = (typeof EntryType)[keyof typeof EntryType];

export interface ListedEntry {
  name: string;
  type: EntryType;
  /** Bytes, for files. */
  size?: number;
}

export interface ReadResult {
  /** The path as given, normalized (`./a//b` → `a/b`). */
  path: string;
  /** Size of the file on disk. */
  size: number;
  /** Its first bytes (all of them unless `truncated`). */
  bytes: Uint8Array;
  truncated: boolean;
}

export interface WriteOptions {
  /** Create missing parent folders (default false: a missing parent is `not_found`). */
  createDirs?: boolean;
  /** Replace an existing file (default true); false makes an existing file a `conflict`. */
  overwrite?: boolean;
}

function forbidden(message: string): MaxwellError {
  return new MaxwellError(ErrorCode.Forbidden, message);
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Splits a workspace path into its components; refuses anything that could leave the root. */
export function splitWorkspacePath(path: unknown): string[] {
  if (typeof path !== "string") throw new MaxwellError(ErrorCode.BadRequest, "path must be a string");
  if (path.length > MAX_PATH) throw new MaxwellError(ErrorCode.BadRequest, `path is longer than ${MAX_PATH} characters`);
  if (path.includes("\0")) throw new MaxwellError(ErrorCode.BadRequest, "path contains a NUL character");
  if (path.startsWith("/") || path.startsWith("\\") || /^[A-Za-z]:/.test(path) || path.startsWith("~")) {
    throw forbidden(`path ${JSON.stringify(path)} is absolute: workspace paths are relative to the workspace root`);
  }
  if (path.includes("\\")) throw new MaxwellError(ErrorCode.BadRequest, `path ${JSON.stringify(path)} contains '\\': separate components with '/'`);
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw forbidden(`path ${JSON.stringify(path)} contains '..': paths may not leave the workspace`);
  if (parts.length > MAX_DEPTH) throw new MaxwellError(ErrorCode.BadRequest, `path is nested deeper than ${MAX_DEPTH} folders`);
  return parts;
}

/** A sandboxed folder; see the module comment. Create with {@link Workspace.open}. */
export class Workspace {
  private constructor(
    /** The root, fully resolved (no symlinks). */
    readonly root: string,
  ) {}

  /** Opens (and with `create`, makes) the workspace rooted at `root`. */
  static async open(root: string, opts: { create?: boolean } = {}): Promise<Workspace> {
    if (opts.create) await mkdir(root, { recursive: true, mode: 0o755 });
    const real = await realpath(root);
    if (!(await stat(real)).isDirectory()) throw new MaxwellError(ErrorCode.BadRequest, `workspace root ${root} is not a folder`);
    return new Workspace(real);
  }

  /** Reads a regular file, at most `maxBytes` of it. */
  async read(path: string, maxBytes: number): Promise<ReadResult> {
    const parts = splitWorkspacePath(path);
    const shown = parts.join("/");
    if (parts.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "path names the workspace root, which is a folder: use file-list");
    const dir = await this.resolveDir(parts.slice(0, -1), shown, false);
    const target = await this.resolveLeaf(dir, parts[parts.length - 1] as string, shown);
    const checked = await lstat(target);
    if (checked.isDirectory()) throw new MaxwellError(ErrorCode.BadRequest, `${shown} is a folder: use file-list`);
    if (!checked.isFile()) throw forbidden(`${shown} is not a regular file (a FIFO, socket or device): refused`);
    const fh = await this.openChecked(target, constants.O_RDONLY, shown, checked);
    try {
      const size = (await fh.stat()).size;
      const want = Math.min(size, maxBytes);
      const bytes = new Uint8Array(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(bytes, got, want - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return { path: shown, size, bytes: got === want ? bytes : bytes.subarray(0, got), truncated: size > got };
    } finally {
      await fh.close();
    }
  }

  /** Lists a folder's entries (sorted by name), at most `maxEntries` of them. */
  async list(path: string, maxEntries: number): Promise<{ path: string; entries: ListedEntry[]; truncated: boolean }> {
    const parts = splitWorkspacePath(path);
    const shown = parts.join("/") || ".";
    const dir = await this.resolveDir(parts, shown, false);
    const names = (await readdir(dir)).sort();
    const entries: ListedEntry[] = [];
    for (const name of names.slice(0, maxEntries)) {
      let st;
      try {
        st = await lstat(join(dir, name));
      } catch (err) {
        if (errnoOf(err) === "ENOENT") continue; // removed while listing
        throw err;
      }
      const type = st.isFile() ? EntryType.File : st.isDirectory() ? EntryType.Dir : st.isSymbolicLink() ? EntryType.Symlink : EntryType.Other;
      entries.push(type === EntryType.File ? { name, type, size: st.size } : { name, type });
    }
    return { path: shown, entries, truncated: names.length > maxEntries };
  }

  /** Writes a regular file (whole), replacing it atomically. */
  async write(path: string, bytes: Uint8Array, opts: WriteOptions = {}): Promise<{ path: string; size: number; created: boolean }> {
    const parts = splitWorkspacePath(path);
    const shown = parts.join("/");
    if (parts.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "path names the workspace root, which is a folder");
    const name = parts[parts.length - 1] as string;
    const dir = await this.resolveDir(parts.slice(0, -1), shown, opts.createDirs ?? false);
    const target = join(dir, name);
    if (!this.contains(target)) throw forbidden(`${shown} is outside the workspace: refused`);
    let existing;
    try {
      existing = await lstat(target);
    } catch (err) {
      if (errnoOf(err) !== "ENOENT") throw err;
    }
    if (existing) {
      if (existing.isSymbolicLink()) throw forbidden(`${shown} is a symlink: file-write neither follows nor replaces symlinks`);
      if (existing.isDirectory()) throw new MaxwellError(ErrorCode.BadRequest, `${shown} is a folder`);
      if (!existing.isFile()) throw forbidden(`${shown} is not a regular file (a FIFO, socket or device): refused`);
      if (opts.overwrite === false) throw new MaxwellError(ErrorCode.Conflict, `${shown} exists and overwrite is false`);
    }
    const tmp = join(dir, `.${name.slice(0, 64)}.${randomBytes(6).toString("hex")}.mx-tmp`);
    const mode = existing ? existing.mode & 0o777 : 0o644;
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    try {
      try {
        await this.assertDescriptorInside(fh, shown);
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (opts.overwrite === false) {
        // link() fails if the target appeared meanwhile, where rename() would replace it.
        try {
          await link(tmp, target);
        } catch (err) {
          if (errnoOf(err) === "EEXIST") throw new MaxwellError(ErrorCode.Conflict, `${shown} exists and overwrite is false`);
          throw err;
        }
        await unlink(tmp);
      } else {
        await rename(tmp, target);
      }
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    return { path: shown, size: bytes.byteLength, created: !existing };
  }

  /**
   * Walks folder components from the root; returns the real path of the last one. A symlink on
   * the way is followed only when it resolves inside the root; with `create`, missing folders are
   * made (mode 0755).
   */
  private async resolveDir(parts: readonly string[], shown: string, create: boolean): Promise<string> {
    let dir = this.root;
    for (const [i, part] of parts.entries()) {
      const next = join(dir, part);
      const here = parts.slice(0, i + 1).join("/");
      // splitWorkspacePath already refused '..'; checked again so no component can ever step out.
      if (!this.contains(next)) throw forbidden(`${here} is outside the workspace: refused`);
      let st;
      try {
        st = await lstat(next);
      } catch (err) {
        if (errnoOf(err) !== "ENOENT") throw err;
        if (!create) throw new MaxwellError(ErrorCode.NotFound, `${here} does not exist (in ${shown})`);
        try {
          await mkdir(next, { mode: 0o755 });
        } catch (mkdirErr) {
          if (errnoOf(mkdirErr) === "EEXIST") throw new MaxwellError(ErrorCode.Conflict, `${here} appeared while it was being created; try again`);
          throw mkdirErr;
        }
        dir = next;
        continue;
      }
      if (st.isSymbolicLink()) {
        const real = await this.followInside(next, here);
        if (!(await stat(real)).isDirectory()) throw new MaxwellError(ErrorCode.BadRequest, `${here} is not a folder`);
        dir = real;
        continue;
      }
      if (!st.isDirectory()) throw new MaxwellError(ErrorCode.BadRequest, `${here} is not a folder`);
      dir = next;
    }
    return dir;
  }

  /** The real path of the last component, following a symlink only when it stays inside. */
  private async resolveLeaf(dir: string, name: string, shown: string): Promise<string> {
    const target = join(dir, name);
    if (!this.contains(target)) throw forbidden(`${shown} is outside the workspace: refused`);
    let st;
    try {
      st = await lstat(target);
    } catch (err) {
      if (errnoOf(err) === "ENOENT") throw new MaxwellError(ErrorCode.NotFound, `${shown} does not exist`);
      throw err;
    }
    return st.isSymbolicLink() ? this.followInside(target, shown) : target;
  }

  private async followInside(link: string, shown: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(link);
    } catch (err) {
      if (errnoOf(err) === "ENOENT") throw new MaxwellError(ErrorCode.NotFound, `${shown} is a symlink to something that does not exist`);
      throw err;
    }
    if (!this.contains(real)) throw forbidden(`${shown} is a symlink that resolves outside the workspace: refused`);
    return real;
  }

  private contains(real: string): boolean {
    return real === this.root || real.startsWith(this.root + sep);
  }

  /**
   * Opens a checked path without following a final symlink and without blocking on a FIFO, then
   * makes sure the descriptor is the very file that was checked (a component swapped for a
   * symlink in between would give another inode) and that it lies inside the root.
   */
  private async openChecked(path: string, flags: number, shown: string, checked: { dev: number; ino: number }): Promise<FileHandle> {
    let fh: FileHandle;
    try {
      fh = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      if (errnoOf(err) === "ELOOP") throw forbidden(`${shown} became a symlink while it was being opened: refused`);
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw forbidden(`${shown} is not a regular file: refused`);
      if (st.dev !== checked.dev || st.ino !== checked.ino) throw new MaxwellError(ErrorCode.Conflict, `${shown} changed while it was being opened; try again`);
      await this.assertDescriptorInside(fh, shown);
      return fh;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Where the kernel says an open descriptor points (Linux /proc); skipped where there is no /proc. */
  private async assertDescriptorInside(fh: FileHandle, shown: string): Promise<void> {
    let where: string;
    try {
      where = await readlink(`/proc/self/fd/${fh.fd}`);
    } catch {
      return;
    }
    if (!this.contains(where)) throw forbidden(`${shown} resolved outside the workspace while it was being opened: refused`);
  }
}
