/**
 * Per-namespace keys (services/memory/keys.ts) and what they seal (sealing.ts), on real files in
 * a temp dir: a sealed value opens only in its namespace and under its key, erasure destroys the
 * key file so nothing opens again, and two processes sharing the directory agree on one key.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { NamespaceKeys, openMemoryArgs, openMemoryResult, parseMemoryArgs, sealMemoryArgs, type RecordView } from "../../services/memory/mod.js";

let root: string;
let n = 0;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "maxwell-memory-keys-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const freshDir = (): string => join(root, `d${n++}`);

function failure(f: () => unknown): MaxwellError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    return err as MaxwellError;
  }
  throw new Error("expected a MaxwellError");
}

describe("namespace keys", () => {
  it("seals a value that only its namespace's key opens", () => {
    const keys = new NamespaceKeys(freshDir());
    const box = keys.seal("agent:worker-1", { step: 1, note: "lmdb page reuse" });
    expect(box.key).toMatch(/^[0-9a-f]{32}$/);
    expect(box.sealed).not.toContain("lmdb");
    expect(Buffer.from(box.sealed, "base64").toString("latin1")).not.toContain("lmdb");
    expect(keys.open("agent:worker-1", box)).toEqual({ step: 1, note: "lmdb page reuse" });
  });

  it("keeps one 0600 file per namespace, named by the namespace's sha256, in a 0700 directory", () => {
    const dir = freshDir();
    const keys = new NamespaceKeys(dir);
    keys.seal("agent:worker-1", 1);
    keys.seal("agent:worker-1", 2);
    keys.seal("shared:team", 3);
    const files = readdirSync(dir).sort();
    const name = (ns: string) => `${createHash("sha256").update(ns).digest("hex")}.key`;
    expect(files).toEqual([name("agent:worker-1"), name("shared:team")].sort());
    expect(statSync(join(dir, name("shared:team"))).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it("refuses a value moved to another namespace, or altered", () => {
    const keys = new NamespaceKeys(freshDir());
    const box = keys.seal("agent:a", "secret");
    keys.seal("agent:b", "other");
    // Same key id in another namespace cannot exist; a box carried over fails on the key...
    expect(failure(() => keys.open("agent:b", box)).code).toBe(ErrorCode.NotFound);
    // ...and a box whose bytes were changed does not authenticate.
    const bytes = Buffer.from(box.sealed, "base64");
    bytes[bytes.length - 20] = (bytes[bytes.length - 20] as number) ^ 1;
    const e = failure(() => keys.open("agent:a", { ...box, sealed: bytes.toString("base64") }));
    expect(e.code).toBe(ErrorCode.BadRequest);
    expect(e.message).toMatch(/does not authenticate/);
    expect(failure(() => keys.open("agent:a", { sealed: box.sealed, key: "../../etc" })).code).toBe(ErrorCode.BadRequest);
  });

  it("erases one record on its own: its key goes, the namespace's other values still open; erasing the namespace takes record keys too", () => {
    const keys = new NamespaceKeys(freshDir());
    const note = keys.seal("agent:w", { value: "note" }, "note");
    const other = keys.seal("agent:w", { value: "other" }, "other");
    const episode = keys.seal("agent:w", { value: "episode" });
    expect(note.record).toBe("note");
    expect(keys.open("agent:w", note)).toEqual({ value: "note" });
    expect(() => keys.open("agent:w", { ...note, record: "other" })).toThrow(/does not authenticate|erased|not in/);
    expect(keys.eraseRecord("agent:w", "note")).toBe(true);
    expect(() => keys.open("agent:w", note)).toThrow(/record "note" of namespace agent:w, which was erased/);
    expect(keys.open("agent:w", other)).toEqual({ value: "other" });
    expect(keys.open("agent:w", episode)).toEqual({ value: "episode" });
    expect(keys.isErased("agent:w", note.key)).toBe(false);
    expect(keys.erase("agent:w")).toBe(true);
    expect(() => keys.open("agent:w", other)).toThrow(/erased/);
    expect(keys.isErased("agent:w", other.key)).toBe(true);
  });

  it("erases a namespace: the key file is gone and nothing it sealed opens, in any process", () => {
    const dir = freshDir();
    const kernel = new NamespaceKeys(dir);
    const service = new NamespaceKeys(dir);
    const box = kernel.seal("principal:alice", { card: "4111" });
    expect(service.open("principal:alice", box)).toEqual({ card: "4111" });
    expect(kernel.erase("principal:alice")).toBe(true);
    expect(readdirSync(dir).filter((f) => f.endsWith(".key"))).toEqual([]);
    expect(kernel.isErased("principal:alice")).toBe(true);
    expect(kernel.isErased("principal:alice", box.key)).toBe(true);
    const e = failure(() => kernel.open("principal:alice", box));
    expect(e.code).toBe(ErrorCode.NotFound);
    expect(e.detail).toMatchObject({ erased: true });
    expect(e.message).toMatch(/was erased/);
    // A fresh process (a replay) cannot open it either.
    expect(failure(() => new NamespaceKeys(dir).open("principal:alice", box)).code).toBe(ErrorCode.NotFound);
    // The service drops its cached copy when it applies the erase.
    service.forget("principal:alice");
    expect(failure(() => service.open("principal:alice", box)).code).toBe(ErrorCode.NotFound);
  });

  it("gives a namespace a new key after an erasure; the old values stay unreadable", () => {
    const keys = new NamespaceKeys(freshDir());
    const old = keys.seal("agent:a", "before");
    keys.erase("agent:a");
    const fresh = keys.seal("agent:a", "after");
    expect(fresh.key).not.toBe(old.key);
    expect(keys.isErased("agent:a")).toBe(false);
    expect(keys.isErased("agent:a", old.key)).toBe(true);
    expect(keys.open("agent:a", fresh)).toBe("after");
    expect(failure(() => keys.open("agent:a", old)).code).toBe(ErrorCode.NotFound);
    expect(keys.erase("agent:never")).toBe(false);
  });

  it("agrees on one key when two processes create it at once", () => {
    const dir = freshDir();
    const a = new NamespaceKeys(dir);
    const b = new NamespaceKeys(dir);
    const fromA = a.seal("shared:team", "a");
    const fromB = b.seal("shared:team", "b");
    expect(fromA.key).toBe(fromB.key);
    expect(b.open("shared:team", fromA)).toBe("a");
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("refuses namespaces that are not namespaces before touching a file", () => {
    const dir = freshDir();
    const keys = new NamespaceKeys(dir);
    for (const ns of ["../x", "agent:a/b", "agent:*"]) expect(failure(() => keys.seal(ns, 1)).code).toBe(ErrorCode.BadRequest);
    expect(existsSync(dir)).toBe(false);
  });
});

describe("what is sealed in the log", () => {
  it("seals a put's value and vector, and nothing else, and opens them back", () => {
    const keys = new NamespaceKeys(freshDir());
    const args = parseMemoryArgs("put", { key: "plan", value: { step: "migrate" }, vector: [0.25, 0.5], tags: ["t"], labels: ["untrusted"], ttlMs: 1000 });
    const logged = sealMemoryArgs(keys, "put", "agent:w", args) as Record<string, unknown>;
    expect(Object.keys(logged).sort()).toEqual(["key", "labels", "sealed", "tags", "ttlMs"]);
    expect(JSON.stringify(logged)).not.toContain("migrate");
    expect(openMemoryArgs(keys, "put", "agent:w", logged)).toEqual(args);
    const del = parseMemoryArgs("delete", { key: "plan" });
    expect(sealMemoryArgs(keys, "delete", "agent:w", del)).toBe(del);
  });

  it("opens the records of a read answer for the agent, and marks the erased ones", () => {
    const keys = new NamespaceKeys(freshDir());
    const view = (ns: string, value: string): RecordView => ({
      namespace: ns as RecordView["namespace"],
      kind: "kv",
      key: "k",
      version: 1,
      at: 1,
      tags: [],
      provenance: { writer: "w", principal: "p", causedBy: "e1", labels: [] },
      sealed: keys.seal(ns, { value }),
    });
    const answer = { hits: [{ record: view("agent:a", "kept"), score: 1 }, { record: view("agent:b", "gone"), score: 0.5 }] };
    keys.erase("agent:b");
    const opened = openMemoryResult(keys, "search", answer) as { hits: { record: RecordView }[] };
    expect(opened.hits[0]?.record.value).toBe("kept");
    expect(opened.hits[0]?.record.sealed).toBeUndefined();
    expect(opened.hits[1]?.record).toMatchObject({ erased: true });
    expect(opened.hits[1]?.record.value).toBeUndefined();
  });
});
