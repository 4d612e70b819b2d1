/**
 * The kernel's secret store: values round-trip, are never on disk in the clear, live in 0600 files,
 * a modified file is refused with a clear error, and a change another process writes is seen
 * without a restart.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SecretStore, secretStorePaths } from "../../src/runtime/secrets.js";
import { refusal } from "../support/refusal.js";

const root = mkdtempSync(join(tmpdir(), "maxwell-secrets-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `data-${++n}`);

describe("secret store", () => {
  it("round-trips values by name, across store instances", () => {
    const dir = freshDir();
    const store = SecretStore.forDataDir(dir);
    expect(store.names()).toEqual([]);
    expect(store.get("db-admin")).toBeUndefined();
    store.set("db-admin", "correct horse battery staple");
    store.set("github", "ghp_value_for_test_123456");
    expect(store.get("db-admin")).toBe("correct horse battery staple");

    const again = SecretStore.forDataDir(dir);
    expect(again.names()).toEqual(["db-admin", "github"]);
    expect(again.values().sort()).toEqual(["correct horse battery staple", "ghp_value_for_test_123456"]);
    expect(again.delete("github")).toBe(true);
    expect(again.delete("github")).toBe(false);
    expect(again.names()).toEqual(["db-admin"]);
  });

  it("never writes a value in the clear, and each write uses a fresh nonce", () => {
    const dir = freshDir();
    const store = SecretStore.forDataDir(dir);
    const canary = "canary-Zq81-plaintext-value";
    store.set("canary", canary);
    const { file } = secretStorePaths(dir);
    const first = readFileSync(file);
    expect(first.toString("utf8")).not.toContain(canary);
    expect(first.toString("latin1")).not.toContain(Buffer.from(canary).toString("base64").slice(0, 12));
    expect(first.toString("utf8")).not.toContain("canary");
    store.set("canary", canary);
    expect(readFileSync(file).toString("utf8")).not.toBe(first.toString("utf8"));
  });

  it("keeps the secrets file and its key at mode 0600", () => {
    const dir = freshDir();
    SecretStore.forDataDir(dir).set("db-admin", "value-123456");
    const { file, keyFile } = secretStorePaths(dir);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
  });

  it("refuses a file whose ciphertext was modified, saying it cannot be trusted", () => {
    const dir = freshDir();
    SecretStore.forDataDir(dir).set("db-admin", "value-123456");
    const { file } = secretStorePaths(dir);
    const sealed = JSON.parse(readFileSync(file, "utf8")) as { data: string };
    const bytes = Buffer.from(sealed.data, "base64");
    bytes[0] = (bytes[0] as number) ^ 0x01;
    writeFileSync(file, JSON.stringify({ ...sealed, data: bytes.toString("base64") }));
    const e = refusal(() => SecretStore.forDataDir(dir).get("db-admin"));
    expect(e.code).toBe("internal");
    expect(e.message).toMatch(/cannot be trusted: it fails authentication/);
  });

  it("refuses a file written with another key", () => {
    const a = freshDir();
    const b = freshDir();
    SecretStore.forDataDir(a).set("db-admin", "value-123456");
    SecretStore.forDataDir(b).set("other", "value-abcdef");
    writeFileSync(secretStorePaths(b).file, readFileSync(secretStorePaths(a).file));
    expect(refusal(() => SecretStore.forDataDir(b).names()).message).toMatch(/fails authentication/);
  });

  it("refuses a file that is not the store's format", () => {
    const dir = freshDir();
    SecretStore.forDataDir(dir).set("db-admin", "value-123456");
    writeFileSync(secretStorePaths(dir).file, '{"db-admin":"plain"}');
    expect(refusal(() => SecretStore.forDataDir(dir).get("db-admin")).message).toMatch(/is not a maxwell-secrets\/1 file/);
  });

  it("says the key is missing when the file exists without it", () => {
    const dir = freshDir();
    SecretStore.forDataDir(dir).set("db-admin", "value-123456");
    rmSync(secretStorePaths(dir).keyFile);
    expect(refusal(() => SecretStore.forDataDir(dir).names()).message).toMatch(/its key .* is missing/);
  });

  it("sees a change another process wrote, without being reopened", () => {
    const dir = freshDir();
    const kernel = SecretStore.forDataDir(dir);
    kernel.set("db-admin", "first-value-1");
    expect(kernel.get("db-admin")).toBe("first-value-1");
    const cli = SecretStore.forDataDir(dir);
    cli.set("db-admin", "second-value-2");
    cli.set("added", "added-value-3");
    expect(kernel.get("db-admin")).toBe("second-value-2");
    expect(kernel.names()).toEqual(["added", "db-admin"]);
    rmSync(secretStorePaths(dir).file);
    expect(kernel.names()).toEqual([]);
  });

  it.each([
    ["an empty name", ""],
    ["a name with a dot", "db.admin"],
    ["a name with a capital", "DbAdmin"],
    ["a name with a space", "db admin"],
  ])("refuses %s with bad_request", (_what, name) => {
    const store = SecretStore.forDataDir(freshDir());
    expect(refusal(() => store.set(name, "value-123456")).code).toBe("bad_request");
    expect(refusal(() => store.get(name)).code).toBe("bad_request");
  });

  it("refuses an empty value and one over the size limit", () => {
    const store = SecretStore.forDataDir(freshDir());
    expect(refusal(() => store.set("x", "")).message).toMatch(/non-empty string/);
    expect(refusal(() => store.set("x", "v".repeat(64 * 1024 + 1))).message).toMatch(/larger than 65536 bytes/);
  });
});
