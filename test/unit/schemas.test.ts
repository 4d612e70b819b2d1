/**
 * The syscall schema at the kernel edge: a payload that does not match is refused with a
 * `bad_request` that names the offending field; actor and principal can never be carried.
 */
import { describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import { parseSyscallRequest } from "../../src/protocol/schemas.js";

const ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

function refusal(value: unknown): MaxwellError {
  try {
    parseSyscallRequest(value);
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    expect((err as MaxwellError).code).toBe("bad_request");
    return err as MaxwellError;
  }
  throw new Error(`expected ${JSON.stringify(value)} to be refused`);
}

describe("parseSyscallRequest", () => {
  it("accepts a minimal and a complete request", () => {
    expect(parseSyscallRequest({ id: "scope:0" })).toEqual({ id: "scope:0" });
    const full = {
      id: "01ARZ3NDEKTSV4RRFFQ69G5FAV:12",
      to: "worker-1",
      body: { any: ["thing", 1, null] },
      causation: ULID,
      timeoutMs: 3_600_000,
      observed: [{ kind: "now", value: 1 }, { kind: "random", value: 0.5 }],
    };
    expect(parseSyscallRequest(full)).toEqual(full);
    expect(parseSyscallRequest({ id: "r:1", inReplyTo: ULID, error: { code: "timeout", message: "slow" } })).toEqual({ id: "r:1", inReplyTo: ULID, error: { code: "timeout", message: "slow" } });
  });

  it("refuses a request without an id", () => {
    expect(refusal({ to: "worker" }).message).toBe("syscall must have required property 'id'");
  });

  it.each([
    ["no step", "scope"],
    ["a non-numeric step", "scope:x"],
    ["a step of ten digits", "scope:1234567890"],
    ["a space", "a b:1"],
    ["a subject wildcard", "a*:1"],
    ["a slash", "a/b:1"],
    ["a 101-character scope", `${"s".repeat(101)}:1`],
    ["nothing at all", ""],
  ])("refuses an id with %s", (_what, id) => {
    expect(refusal({ id }).message).toMatch(/^syscall field 'id' must match pattern/);
  });

  it("refuses an id that is not a string", () => {
    expect(refusal({ id: 7 }).message).toBe("syscall field 'id' must be string");
  });

  it("refuses an unknown field and names it", () => {
    expect(refusal({ id: "s:1", bogus: 1 }).message).toBe("syscall has a field it may not carry: 'bogus'");
  });

  it.each(["actor", "principal"])("refuses a request carrying %s, explaining where it really comes from", (field) => {
    const e = refusal({ id: "s:1", to: "worker", [field]: "someone-else" });
    expect(e.message).toContain(`'${field}'`);
    expect(e.message).toContain("authenticated connection, never from a payload");
  });

  it.each([
    ["zero", 0],
    ["negative", -1],
    ["fractional", 1.5],
    ["above an hour", 3_600_001],
    ["a string", "100"],
  ])("refuses a timeoutMs that is %s", (_what, timeoutMs) => {
    expect(refusal({ id: "s:1", to: "w", timeoutMs }).message).toMatch(/^syscall field 'timeoutMs' /);
  });

  it.each(["a.*", ">", "a\u0000", "A", "", "a b", "x".repeat(65)])("refuses the target name %j", (to) => {
    expect(refusal({ id: "s:1", to }).message).toMatch(/^syscall field 'to' must match pattern/);
  });

  it.each(["not-a-ulid", ULID.toLowerCase(), `${ULID}X`, "01ARZ3NDEKTSV4RRFFQ69G5FAU".replace("U", "I")])("refuses causation %j that is not an event id", (causation) => {
    expect(refusal({ id: "s:1", to: "w", causation }).message).toMatch(/^syscall field 'causation'/);
    expect(refusal({ id: "s:1", inReplyTo: causation }).message).toMatch(/^syscall field 'inReplyTo'/);
  });

  it("refuses observations of an unknown kind, without a value, or with extra fields", () => {
    expect(refusal({ id: "s:1", observed: [{ kind: "disk", value: 1 }] }).message).toMatch(/^syscall field 'observed.0.kind'/);
    expect(refusal({ id: "s:1", observed: [{ kind: "now" }] }).message).toMatch(/^syscall field 'observed.0'/);
    expect(refusal({ id: "s:1", observed: [{ kind: "now", value: 1, extra: 1 }] }).message).toMatch(/'extra'/);
    expect(refusal({ id: "s:1", observed: new Array(1025).fill({ kind: "now", value: 1 }) }).message).toMatch(/^syscall field 'observed'/);
  });

  it("refuses a reply error outside the closed set of codes or with an overlong message", () => {
    expect(refusal({ id: "s:1", inReplyTo: ULID, error: { code: "oops", message: "x" } }).message).toMatch(/^syscall field 'error.code'/);
    expect(refusal({ id: "s:1", inReplyTo: ULID, error: { code: "internal", message: "x".repeat(4097) } }).message).toMatch(/^syscall field 'error.message'/);
    expect(refusal({ id: "s:1", inReplyTo: ULID, error: { code: "internal" } }).message).toMatch(/'message'/);
  });

  it.each([null, [], "s:1", 1, true])("refuses a payload that is not an object (%j)", (value) => {
    expect(refusal(value).message).toMatch(/^syscall /);
  });

  it("keeps the validator's findings as detail for machines", () => {
    const e = refusal({ id: "s:1", bogus: 1 });
    expect(e.detail?.["schema"]).toBe("https://maxwell.dev/schemas/syscall-request.json");
    expect(Array.isArray(e.detail?.["errors"])).toBe(true);
  });
});
