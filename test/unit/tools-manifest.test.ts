/**
 * Tool manifests: the canonical form and hash the kernel pins (stable under key order, changed by
 * any change of content), validation of a manifest handed in, and argument checks that name the
 * failing field.
 */
import { describe, expect, it } from "vitest";
import { canonicalJson, compileArgsValidator, compileResultValidator, manifestHash, validateManifest } from "../../src/protocol/manifest.js";
import type { ToolManifest } from "../../src/protocol/services.js";
import { refusal } from "../support/refusal.js";

const manifest = (): ToolManifest => ({
  name: "file-read",
  version: "1.0.0",
  description: "Reads a file",
  effect: "read",
  idempotent: true,
  input: {
    type: "object",
    properties: { path: { type: "string", minLength: 1 }, lines: { type: "array", items: { type: "integer" } } },
    required: ["path"],
    additionalProperties: false,
  },
});

describe("canonicalJson", () => {
  it("sorts keys at every depth and writes no whitespace", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: true, y: null }], c: "x" } })).toBe('{"a":{"c":"x","d":[3,{"y":null,"z":true}]},"b":1}');
  });

  it("leaves out undefined members and writes undefined array items as null, as JSON.stringify does", () => {
    expect(canonicalJson({ a: undefined, b: [undefined, 1] })).toBe('{"b":[null,1]}');
  });

  it.each([
    ["a non-finite number", { n: Number.NaN }],
    ["a bigint", { n: 1n }],
    ["a class instance", { d: new Date(0) }],
    ["a function", { f: () => 1 }],
  ])("refuses %s with bad_request", (_what, value) => {
    expect(refusal(() => canonicalJson(value)).code).toBe("bad_request");
  });

  it("refuses a cycle instead of recursing forever", () => {
    const a: Record<string, unknown> = {};
    a["self"] = a;
    expect(refusal(() => canonicalJson(a)).message).toMatch(/cycle/);
  });
});

describe("manifestHash", () => {
  it("is the hex sha256 of the canonical JSON, the same whatever the key order", () => {
    const m = manifest();
    const reordered = JSON.parse(JSON.stringify({ input: m.input, idempotent: true, effect: "read", description: m.description, version: "1.0.0", name: "file-read" })) as ToolManifest;
    expect(manifestHash(m)).toMatch(/^[0-9a-f]{64}$/);
    expect(manifestHash(reordered)).toBe(manifestHash(m));
  });

  it("is pinned: a manifest hashes to the sha256 of its canonical text, computed here independently (sha256sum)", () => {
    // printf '%s' '{"description":"","effect":"read","input":{"type":"object"},"name":"t","version":"1"}' | sha256sum
    expect(manifestHash({ version: "1", name: "t", input: { type: "object" }, effect: "read", description: "" })).toBe("8a642fe209ec402eb95cdf8b970ac905ff7d2bb0f30c6eae63cbda9b8a6f46d2");
  });

  it.each([
    ["the version", (m: ToolManifest) => ({ ...m, version: "1.0.1" })],
    ["the effect", (m: ToolManifest) => ({ ...m, effect: "write" as const })],
    ["the description", (m: ToolManifest) => ({ ...m, description: m.description + " (and deletes it)" })],
    ["a schema detail", (m: ToolManifest) => ({ ...m, input: { ...m.input, additionalProperties: true } })],
    ["the secrets it asks for", (m: ToolManifest) => ({ ...m, secrets: { token: "github" } })],
  ])("changes when %s changes", (_what, change) => {
    const m = manifest();
    expect(manifestHash(change(m))).not.toBe(manifestHash(m));
  });
});

describe("validateManifest", () => {
  it("accepts a well-formed manifest and returns one with the same hash", () => {
    const m = manifest();
    const checked = validateManifest(JSON.parse(JSON.stringify(m)));
    expect(checked).toEqual(m);
    expect(manifestHash(checked)).toBe(manifestHash(m));
  });

  it.each([
    ["not an object", [], /must be a JSON object/],
    ["a name with a capital", { ...manifest(), name: "FileRead" }, /'name' "FileRead" is invalid/],
    ["a name with a dot", { ...manifest(), name: "file.read" }, /'name' "file.read" is invalid/],
    ["a name longer than 64", { ...manifest(), name: "a".repeat(65) }, /is invalid/],
    ["an unknown effect", { ...manifest(), effect: "delete" }, /'effect' must be one of read, write, destructive, external, not "delete"/],
    ["no version", { ...manifest(), version: "" }, /'version' must be a non-empty string/],
    ["an input that is not an object schema", { ...manifest(), input: { type: "string" } }, /'input' must be a JSON Schema with "type": "object"/],
    ["an input ajv cannot compile", { ...manifest(), input: { type: "object", properties: { a: { type: "strnig" } } } }, /'input' is not a JSON Schema ajv can compile/],
    ["an output ajv cannot compile", { ...manifest(), output: { type: "object", required: "path" } }, /'output' is not a JSON Schema ajv can compile/],
    ["an unknown field", { ...manifest(), endpoint: "http://x" }, /unknown field 'endpoint'/],
    ["a secret reference that is not a secret name", { ...manifest(), secrets: { password: "DB ADMIN" } }, /secret 'password' must name a secret/],
    ["a non-boolean idempotent", { ...manifest(), idempotent: "yes" }, /'idempotent' must be a boolean/],
  ])("refuses %s with bad_request", (_what, value, message) => {
    const e = refusal(() => validateManifest(value));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(message);
  });

  it("reads an input schema that names draft 2020-12, as MCP servers' schemas often do", () => {
    const m = { ...manifest(), input: { $schema: "https://json-schema.org/draft/2020-12/schema", type: "object", properties: { q: { type: "string" } } } };
    expect(validateManifest(m).input["$schema"]).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(() => compileArgsValidator(m)({ q: "x" })).not.toThrow();
  });
});

describe("compileArgsValidator", () => {
  const check = compileArgsValidator(manifest());

  it("passes arguments that match the input schema", () => {
    expect(() => check({ path: "notes.txt", lines: [1, 2] })).not.toThrow();
  });

  it.each([
    ["a wrong type", { path: 42 }, "path", /args field 'path' must be string/],
    ["a missing required field", {}, "path", /args field 'path' is required/],
    ["an extra field", { path: "a", mode: "rw" }, "mode", /args field 'mode' is not an argument this tool takes/],
    ["a nested failure", { path: "a", lines: [1, "two"] }, "lines.1", /args field 'lines.1' must be integer/],
    ["no object at all", "notes.txt", "", /tool 'file-read' args must be object/],
  ])("refuses %s with bad_request naming the failing path", (_what, args, path, message) => {
    const e = refusal(() => check(args));
    expect(e.code).toBe("bad_request");
    expect(e.message).toMatch(/^tool 'file-read' /);
    expect(e.message).toMatch(message);
    expect(e.detail?.["path"]).toBe(path);
  });

  it("checks results against the output schema when there is one", () => {
    expect(compileResultValidator(manifest())).toBeUndefined();
    const withOutput = { ...manifest(), output: { type: "object", properties: { size: { type: "integer" } }, required: ["size"] } };
    const checkResult = compileResultValidator(withOutput) as (v: unknown) => void;
    expect(() => checkResult({ size: 3 })).not.toThrow();
    expect(refusal(() => checkResult({ size: "3" })).message).toMatch(/result field 'size' must be integer/);
  });
});
