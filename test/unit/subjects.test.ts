/**
 * Subjects are built only from valid identity names, so no dot, wildcard, space or control
 * character can ever reach a subject (and with it, the server's permissions).
 */
import { describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import { SyscallOp, assertName, consumers, isName, isSyscallOp, parseSyscallSubject, subjects } from "../../src/protocol/subjects.js";

describe("identity names", () => {
  it.each(["a", "worker", "worker-2", "data_pipeline", "z9", "a".repeat(64)])("accepts %j", (name) => {
    expect(isName(name)).toBe(true);
    expect(() => assertName(name)).not.toThrow();
  });

  it.each([
    ["empty", ""],
    ["an upper-case letter", "Worker"],
    ["a leading digit", "1worker"],
    ["a leading dash", "-worker"],
    ["a dot (a subject separator)", "a.b"],
    ["a single-token wildcard", "a*"],
    ["a lone wildcard", "*"],
    ["a full wildcard", ">"],
    ["a trailing full wildcard", "a.>"],
    ["a space", "a b"],
    ["a tab", "a\tb"],
    ["a NUL byte", "a\u0000"],
    ["a newline", "a\nb"],
    ["a non-ASCII letter", "wörker"],
    ["65 characters", "a".repeat(65)],
    ["a dollar (JetStream API prefix)", "$js"],
  ])("refuses a name with %s", (_what, name) => {
    expect(isName(name)).toBe(false);
    let err: unknown;
    try {
      assertName(name, "agent name");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MaxwellError);
    expect((err as MaxwellError).code).toBe("bad_request");
    expect((err as MaxwellError).message).toContain(`invalid agent name ${JSON.stringify(name)}`);
  });

  it.each([undefined, null, 42, {}, ["a"]])("refuses a non-string name (%j) and says what it was", (value) => {
    expect(isName(value)).toBe(false);
    expect(() => assertName(value)).toThrow(/invalid name/);
  });
});

describe("subjects", () => {
  it("builds every subject under the one prefix from a valid name", () => {
    expect(subjects.syscall("alice", SyscallOp.Send)).toBe("mx.sys.alice.send");
    expect(subjects.syscallsOf("alice")).toBe("mx.sys.alice.>");
    expect(subjects.inboxPrefix("alice")).toBe("mx.rep.alice");
    expect(subjects.inboxOf("alice")).toBe("mx.rep.alice.>");
    expect(subjects.logInbox("w")).toBe("mx.log.in.w");
    expect(subjects.logReplies("w")).toBe("mx.log.rep.w");
    expect(subjects.logDecision("w")).toBe("mx.log.dec.w");
    expect(subjects.consumerNext(consumers.inbox("w"))).toBe("$JS.API.CONSUMER.MSG.NEXT.MXLOG.in-w");
  });

  it.each([
    ["syscall", () => subjects.syscall("a.b", SyscallOp.Send)],
    ["syscallsOf", () => subjects.syscallsOf("*")],
    ["inboxPrefix", () => subjects.inboxPrefix("a.>")],
    ["inboxOf", () => subjects.inboxOf(">")],
    ["logInbox", () => subjects.logInbox("x.>")],
    ["logReplies", () => subjects.logReplies("a b")],
    ["logDecision", () => subjects.logDecision("a\u0000")],
    ["logRecord", () => subjects.logRecord("")],
    ["logIdentity", () => subjects.logIdentity("A")],
    ["consumers.inbox", () => consumers.inbox("a.b")],
    ["consumers.replies", () => consumers.replies("*")],
  ])("refuses to build %s from an invalid name", (_what, build) => {
    expect(build).toThrow(MaxwellError);
  });

  it("parses a syscall subject into actor and op, and nothing else", () => {
    expect(parseSyscallSubject("mx.sys.alice.send")).toEqual({ actor: "alice", op: "send" });
    expect(parseSyscallSubject("mx.sys.alice.explode")).toEqual({ actor: "alice", op: "explode" });
    expect(parseSyscallSubject("mx.sys.alice")).toBeUndefined();
    expect(parseSyscallSubject("mx.sys.alice.send.extra")).toBeUndefined();
    expect(parseSyscallSubject("mx.rep.alice.send")).toBeUndefined();
    expect(parseSyscallSubject("xx.sys.alice.send")).toBeUndefined();
  });

  it("knows exactly the syscall ops", () => {
    expect(Object.values(SyscallOp).every(isSyscallOp)).toBe(true);
    for (const op of ["explode", "", "SEND", "send ", "admin"]) expect(isSyscallOp(op)).toBe(false);
  });
});
