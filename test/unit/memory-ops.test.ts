/**
 * The memory operations' argument rules (services/memory/ops.ts): what the kernel checks before
 * it logs a `mem` syscall. Each bad input is a `bad_request` naming the field; good input comes
 * back normalized; the namespaces a call touches are the ones the kernel must authorize.
 */
import { describe, expect, it } from "vitest";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import {
  MEMORY_READ_OPS,
  MEMORY_WRITE_OPS,
  MemoryLimits,
  memoryRules,
  namespacesOf,
  parseMemoryArgs,
} from "../../services/memory/mod.js";

function refusal(f: () => unknown): MaxwellError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    expect((err as MaxwellError).code).toBe(ErrorCode.BadRequest);
    return err as MaxwellError;
  }
  throw new Error("expected a bad_request, but the arguments were accepted");
}

const vector = (n: number, x = 0.5): number[] => Array.from({ length: n }, () => x);

describe("memory operations", () => {
  it("splits the agent operations into writes and reads, with erase in neither", () => {
    expect([...MEMORY_WRITE_OPS].sort()).toEqual(["append", "delete", "put"]);
    expect([...MEMORY_READ_OPS].sort()).toEqual(["get", "list", "range", "search"]);
    expect(memoryRules.isWrite("erase") || memoryRules.isRead("erase")).toBe(false);
    expect(memoryRules.isWrite("put") && memoryRules.isRead("get")).toBe(true);
  });

  it("normalizes a put: tags and labels sorted and unique, the vector at float32 precision", () => {
    const args = parseMemoryArgs("put", { key: "plan", value: { step: 1 }, tags: ["b", "a", "b"], labels: ["untrusted", "conf:x", "untrusted"], vector: [0.1, 0.2], ttlMs: 5000, expectedVersion: 0 });
    expect(args).toEqual({ key: "plan", value: { step: 1 }, tags: ["a", "b"], labels: ["conf:x", "untrusted"], vector: [Math.fround(0.1), Math.fround(0.2)], ttlMs: 5000, expectedVersion: 0 });
  });

  it("returns no undefined members (what is logged is exactly what was given)", () => {
    const args = parseMemoryArgs("append", { value: "saw a 404", tags: undefined });
    expect(Object.keys(args)).toEqual(["value"]);
  });

  it.each([
    ["a key with a path separator", "put", { key: "a/b", value: 1 }, /path separators/, "key"],
    ["a key with a backslash", "get", { key: "a\\b" }, /path separators/, "key"],
    ["a key with a wildcard", "delete", { key: "a*" }, /wildcards/, "key"],
    ["a key with a full wildcard", "get", { key: ">" }, /wildcards/, "key"],
    ["a key with a control character", "put", { key: "a\u0000b", value: 1 }, /control characters/, "key"],
    ["an empty key", "put", { key: "", value: 1 }, /empty/, "key"],
    ["a key over the limit", "get", { key: "k".repeat(MemoryLimits.maxKeyBytes + 1) }, /limit is 512/, "key"],
    ["a missing value", "put", { key: "k" }, /missing 'value'/, "value"],
    ["an oversized value", "put", { key: "k", value: "x".repeat(MemoryLimits.maxValueBytes + 1) }, /value too large/, "value"],
    ["a value that is not plain data", "append", { value: { f: () => 1 } }, /only plain data/, "value"],
    ["a vector with NaN", "put", { key: "k", value: 1, vector: [0.1, Number.NaN] }, /only finite/, "vector"],
    ["a vector with Infinity", "append", { value: 1, vector: [Infinity] }, /only finite/, "vector"],
    ["an empty vector", "put", { key: "k", value: 1, vector: [] }, /dimension 0/, "vector"],
    ["a vector over the largest dimension", "put", { key: "k", value: 1, vector: vector(MemoryLimits.maxDimension + 1) }, /dimension 4097/, "vector"],
    ["the zero vector", "put", { key: "k", value: 1, vector: [0, 0] }, /no direction/, "vector"],
    ["a vector of strings", "put", { key: "k", value: 1, vector: ["1"] }, /not a number/, "vector"],
    ["a negative TTL", "put", { key: "k", value: 1, ttlMs: -1 }, /ttlMs/, "ttlMs"],
    ["a negative expected version", "put", { key: "k", value: 1, expectedVersion: -1 }, /expectedVersion/, "expectedVersion"],
    ["a tag with a wildcard", "append", { value: 1, tags: ["a>"] }, /wildcards/, "tags"],
    ["a label with a control character", "put", { key: "k", value: 1, labels: ["x\n"] }, /control characters/, "labels"],
    ["an unknown argument", "put", { key: "k", value: 1, version: 3 }, /unknown argument "version"/, "version"],
    ["a range whose end is before its start", "range", { from: 10, to: 5 }, /must be before/, "from"],
    ["a range limit of 0", "range", { limit: 0 }, /limit/, "limit"],
    ["a list limit of 10^9", "list", { limit: 1e9 }, /limit/, "limit"],
    ["a list prefix with a path separator", "list", { prefix: "../" }, /path separators/, "prefix"],
  ])("refuses %s", (_what, op, args, message, field) => {
    const e = refusal(() => parseMemoryArgs(op, args));
    expect(e.message).toMatch(message);
    expect((e.detail as { field?: string } | undefined)?.field).toMatch(new RegExp(`^${field}`));
  });

  it.each([
    ["k = 0", { mode: "text", query: "x", k: 0 }, /k 0/],
    ["k = 10^9", { mode: "text", query: "x", k: 1e9 }, /k 1000000000/],
    ["k that is not an integer", { mode: "text", query: "x", k: 2.5 }, /k 2.5/],
    ["no mode", { query: "x", k: 5 }, /invalid mode/],
    ["text without a query", { mode: "text", k: 5 }, /needs a non-empty 'query'/],
    ["a blank query", { mode: "hybrid", query: "  ", vector: [1], k: 5 }, /needs a non-empty 'query'/],
    ["vector without a vector", { mode: "vector", k: 5 }, /needs a 'vector'/],
    ["a vector in a text search", { mode: "text", query: "x", vector: [1], k: 5 }, /takes no 'vector'/],
    ["a NaN in the query vector", { mode: "vector", vector: [Number.NaN], k: 5 }, /only finite/],
    ["a namespace with a path separator", { mode: "text", query: "x", k: 5, namespaces: ["agent:a/b"] }, /path separators/],
    ["a namespace with a wildcard", { mode: "text", query: "x", k: 5, namespaces: ["shared:*"] }, /wildcards/],
    ["an empty namespace list", { mode: "text", query: "x", k: 5, namespaces: [] }, /non-empty array/],
    ["65 namespaces", { mode: "text", query: "x", k: 5, namespaces: Array.from({ length: 65 }, (_, i) => `shared:n${i}`) }, /limit is 64/],
    ["since after until", { mode: "text", query: "x", k: 5, since: 10, until: 10 }, /must be before/],
  ])("refuses a search with %s", (_what, args, message) => {
    expect(refusal(() => parseMemoryArgs("search", args)).message).toMatch(message);
  });

  it("refuses an unknown operation, and arguments for erase", () => {
    expect(refusal(() => parseMemoryArgs("drop", {})).message).toMatch(/unknown memory operation "drop"/);
    expect(refusal(() => parseMemoryArgs("put", "k=v")).message).toMatch(/expected an object/);
    expect(parseMemoryArgs("erase", {})).toEqual({});
    expect(refusal(() => parseMemoryArgs("erase", { namespace: "agent:x" })).message).toMatch(/takes no arguments/);
  });

  it("names the namespaces to authorize: the target, or each namespace a search names", () => {
    const search = parseMemoryArgs("search", { mode: "text", query: "x", k: 3, namespaces: ["shared:b", "agent:a", "shared:b"] });
    expect(search.namespaces).toEqual(["agent:a", "shared:b"]);
    expect(namespacesOf("search", "agent:a", search)).toEqual(["agent:a", "shared:b"]);
    expect(namespacesOf("search", "agent:a", parseMemoryArgs("search", { mode: "text", query: "x", k: 3 }))).toEqual(["agent:a"]);
    expect(namespacesOf("put", "principal:alice", { key: "k", value: 1 })).toEqual(["principal:alice"]);
  });

  it.each(["agent:a/b", "agent:*", "shared:>", "agent:a\u0007", "worker-1", ""])("refuses the target namespace %j", (target) => {
    refusal(() => namespacesOf("get", target, { key: "k" }));
  });
});
