/**
 * The workspace sandbox on a real file system: reads, lists and writes stay under the root;
 * absolute paths, `..`, symlinks that resolve outside and special files are refused, and writes
 * never follow a symlink.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import { Workspace, splitWorkspacePath } from "../../services/tools/workspace.js";

async function refusal(f: () => Promise<unknown>): Promise<MaxwellError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    return err as MaxwellError;
  }
  throw new Error("expected a MaxwellError, but nothing was thrown");
}

describe("workspace", () => {
  const dir = mkdtempSync(join(tmpdir(), "maxwell-ws-"));
  const root = join(dir, "root");
  const outside = join(dir, "outside");
  let ws: Workspace;
  let socketServer: Server;

  beforeAll(async () => {
    mkdirSync(join(root, "docs"), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(root, "docs", "a.txt"), "hello");
    writeFileSync(join(outside, "secret.txt"), "outside-secret");
    symlinkSync(outside, join(root, "escape-dir"));
    symlinkSync(join(outside, "secret.txt"), join(root, "escape-file"));
    symlinkSync("docs/a.txt", join(root, "inside-link"));
    symlinkSync("docs", join(root, "inside-dir"));
    execFileSync("mkfifo", [join(root, "pipe")]);
    socketServer = createServer();
    await new Promise<void>((resolve) => socketServer.listen(join(root, "sock"), resolve));
    ws = await Workspace.open(root);
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => socketServer.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("reads a file by relative path, normalizing ./ and //", async () => {
    const r = await ws.read("./docs//a.txt", 1024);
    expect(r).toMatchObject({ path: "docs/a.txt", size: 5, truncated: false });
    expect(new TextDecoder().decode(r.bytes)).toBe("hello");
  });

  it("cuts a read at the limit and says so", async () => {
    const r = await ws.read("docs/a.txt", 2);
    expect(new TextDecoder().decode(r.bytes)).toBe("he");
    expect(r).toMatchObject({ size: 5, truncated: true });
  });

  it("follows a symlink that stays inside the root", async () => {
    expect(new TextDecoder().decode((await ws.read("inside-link", 100)).bytes)).toBe("hello");
    expect(new TextDecoder().decode((await ws.read("inside-dir/a.txt", 100)).bytes)).toBe("hello");
  });

  it.each([
    ["an absolute path", "/etc/passwd", /is absolute/],
    ["a home-relative path", "~/.ssh/id_rsa", /is absolute/],
    ["a '..' traversal", "../outside/secret.txt", /contains '\.\.'/],
    ["a '..' in the middle", "docs/../../outside/secret.txt", /contains '\.\.'/],
    ["a symlinked file that resolves outside", "escape-file", /symlink that resolves outside the workspace/],
    ["a path through a symlinked folder outside", "escape-dir/secret.txt", /symlink that resolves outside the workspace/],
    ["a FIFO", "pipe", /not a regular file/],
    ["a socket", "sock", /not a regular file/],
  ])("refuses to read %s with forbidden", async (_what, path, message) => {
    const e = await refusal(() => ws.read(path, 1024));
    expect(e.code).toBe("forbidden");
    expect(e.message).toMatch(message);
  });

  it("answers not_found for a missing file, and bad_request for a folder", async () => {
    expect((await refusal(() => ws.read("docs/missing.txt", 10))).code).toBe("not_found");
    expect((await refusal(() => ws.read("docs", 10))).message).toMatch(/is a folder: use file-list/);
  });

  it("lists a folder, reporting symlinks and special files without following them", async () => {
    const listed = await ws.list(".", 100);
    expect(listed.path).toBe(".");
    expect(listed.entries).toEqual([
      { name: "docs", type: "dir" },
      { name: "escape-dir", type: "symlink" },
      { name: "escape-file", type: "symlink" },
      { name: "inside-dir", type: "symlink" },
      { name: "inside-link", type: "symlink" },
      { name: "pipe", type: "other" },
      { name: "sock", type: "other" },
    ]);
    expect((await ws.list(".", 2)).truncated).toBe(true);
    expect((await ws.list("docs", 10)).entries).toEqual([{ name: "a.txt", type: "file", size: 5 }]);
  });

  it("refuses to list a folder outside through a symlink", async () => {
    expect((await refusal(() => ws.list("escape-dir", 10))).code).toBe("forbidden");
  });

  it("writes a new file, replaces it, and creates folders only when asked", async () => {
    expect(await ws.write("notes/today.md", new TextEncoder().encode("one"), { createDirs: true })).toEqual({ path: "notes/today.md", size: 3, created: true });
    expect(await ws.write("notes/today.md", new TextEncoder().encode("two!"))).toEqual({ path: "notes/today.md", size: 4, created: false });
    expect(readFileSync(join(root, "notes", "today.md"), "utf8")).toBe("two!");
    expect((await refusal(() => ws.write("fresh/x.md", new TextEncoder().encode("x")))).code).toBe("not_found");
    expect(existsSync(join(root, "fresh"))).toBe(false);
  });

  it("refuses to replace a file when overwrite is false", async () => {
    const e = await refusal(() => ws.write("docs/a.txt", new TextEncoder().encode("x"), { overwrite: false }));
    expect(e.code).toBe("conflict");
    expect(readFileSync(join(root, "docs", "a.txt"), "utf8")).toBe("hello");
  });

  it("never writes through a symlink, even one pointing inside", async () => {
    for (const path of ["escape-file", "inside-link"]) {
      const e = await refusal(() => ws.write(path, new TextEncoder().encode("pwned")));
      expect(e.code).toBe("forbidden");
      expect(e.message).toMatch(/is a symlink/);
    }
    expect(readFileSync(join(outside, "secret.txt"), "utf8")).toBe("outside-secret");
    expect(readFileSync(join(root, "docs", "a.txt"), "utf8")).toBe("hello");
  });

  it("refuses to write into a folder outside through a symlink, or over a FIFO", async () => {
    expect((await refusal(() => ws.write("escape-dir/new.txt", new TextEncoder().encode("x")))).code).toBe("forbidden");
    expect(existsSync(join(outside, "new.txt"))).toBe(false);
    expect((await refusal(() => ws.write("pipe", new TextEncoder().encode("x")))).code).toBe("forbidden");
    expect((await refusal(() => ws.write("../x", new TextEncoder().encode("x")))).code).toBe("forbidden");
  });

  it("refuses malformed paths with bad_request", () => {
    for (const path of ["a\0b", "a\\b", "x".repeat(5000)]) {
      let code: string | undefined;
      try {
        splitWorkspacePath(path);
      } catch (err) {
        code = (err as MaxwellError).code;
      }
      expect(code).toBe("bad_request");
    }
  });
});
