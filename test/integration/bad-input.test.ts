/**
 * Promise 7: bad input gets a clear, typed error and is logged; it never crashes a service.
 * An agent connects raw (as a process in any language would) and publishes garbage on its own
 * syscall subjects; every answer must be a typed error, every refusal must be in the log, and
 * the kernel must go on serving.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EventType,
  LOG_STREAM,
  SyscallOp,
  decodeMap,
  encode,
  parseLogEvent,
  subjects,
  type SyscallReply,
  type WireError,
} from "../../src/protocol/mod.js";
import {
  connectNats,
  jetstream,
  jetstreamManager,
  readLog,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from "../../src/transport/connection.js";
import { startHarness, type Harness } from "../support/harness.js";

/** msgpack fixstr (strings shorter than 32 bytes), for hand-built payloads. */
function fixstr(s: string): number[] {
  const bytes = [...new TextEncoder().encode(s)];
  if (bytes.length > 31) throw new Error("fixstr only");
  return [0xa0 | bytes.length, ...bytes];
}

describe("bad input", () => {
  let h: Harness;
  let kernelNc: NatsConnection;
  let kjs: JetStreamClient;
  let kjsm: JetStreamManager;
  const opened: NatsConnection[] = [];
  const creds = new Map<string, string>();
  let valid = 0;

  async function register(name: string, groups: string[]): Promise<void> {
    creds.set(name, (await h.register(name, "agent", groups)).creds);
  }

  async function connectAs(name: string): Promise<NatsConnection> {
    const nc = await connectNats({
      servers: h.url,
      creds: new TextEncoder().encode(creds.get(name) as string),
      name: `test:${name}`,
      inboxPrefix: subjects.inboxPrefix(name),
      reconnect: false,
    });
    opened.push(nc);
    return nc;
  }

  /** Publishes raw bytes on one of the actor's own syscall subjects and decodes the answer. */
  async function raw(nc: NatsConnection, actor: string, op: string, data: Uint8Array): Promise<SyscallReply> {
    const m = await nc.request(subjects.syscall(actor, op as SyscallOp), data, { timeout: 10_000 });
    return decodeMap(m.data) as unknown as SyscallReply;
  }

  async function lastSeq(): Promise<number> {
    return (await kjsm.streams.info(LOG_STREAM)).state.last_seq;
  }

  async function logFrom(fromSeq: number): Promise<Array<Record<string, unknown>>> {
    const out: Array<Record<string, unknown>> = [];
    for await (const e of readLog(kjs, kjsm, { fromSeq })) out.push(decodeMap(e.data));
    return out;
  }

  function expectError(reply: SyscallReply, code: WireError["code"], message: RegExp): WireError {
    expect(reply.ok, `expected a ${code} error, got ${JSON.stringify(reply)}`).toBe(false);
    if (reply.ok) throw new Error("unreachable");
    expect(reply.error.code).toBe(code);
    expect(reply.error.message).toMatch(message);
    return reply.error;
  }

  /** The refusal the kernel answered with is in the log, as a rejection or a denial by `actor`. */
  async function expectRefusalLogged(fromSeq: number, actor: string, error: WireError): Promise<void> {
    const events = await logFrom(fromSeq);
    const refusals = events.filter((e) => (e["type"] === EventType.Rejected || e["type"] === EventType.Denied) && e["actor"] === actor);
    expect(refusals.map((e) => e["error"])).toContainEqual(expect.objectContaining({ code: error.code, message: error.message }));
    for (const e of refusals) expect(() => parseLogEvent(e)).not.toThrow();
    expect(events.filter((e) => e["type"] === EventType.Message || e["type"] === EventType.Reply)).toEqual([]);
  }

  /** The kernel is alive and still accepts a well-formed send from the same connection. */
  async function expectStillServing(nc: NatsConnection): Promise<void> {
    const reply = await raw(nc, "prober", SyscallOp.Send, encode({ id: `valid-${++valid}:1`, to: "sink", body: { n: valid } }));
    expect(reply.ok, JSON.stringify(reply)).toBe(true);
    expect(h.kernel.child.exitCode).toBeNull();
    expect(h.kernel.child.signalCode).toBeNull();
  }

  beforeAll(async () => {
    h = await startHarness();
    kernelNc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "test:kernel", reconnect: false });
    kjsm = await jetstreamManager(kernelNc);
    kjs = jetstream(kernelNc);
    await register("prober", ["coordinators"]);
    await register("sink", ["workers"]);
    await register("bystander", ["workers"]);
  });

  afterAll(async () => {
    await Promise.allSettled(opened.map((nc) => nc.close()));
    await kernelNc?.close();
    await h?.close();
  });

  const cases: Array<[string, string, () => Uint8Array, RegExp]> = [
    ["malformed msgpack (a truncated map)", SyscallOp.Send, () => new Uint8Array([0x81, 0xa1, 0x61]), /not valid msgpack/],
    ["malformed msgpack (trailing bytes after the value)", SyscallOp.Send, () => new Uint8Array([0x01, 0x02]), /not valid msgpack/],
    ["an empty payload", SyscallOp.Send, () => new Uint8Array(0), /empty payload/],
    ["a msgpack array instead of a map", SyscallOp.Send, () => encode([{ id: "arr:1", to: "sink" }]), /must be a msgpack map/],
    ["a msgpack string instead of a map", SyscallOp.Send, () => encode("send sink hello"), /must be a msgpack map/],
    ["a syscall without an id", SyscallOp.Send, () => encode({ to: "sink", body: 1 }), /required property 'id'/],
    ["an id with bad characters", SyscallOp.Send, () => encode({ id: "a b/c*:1", to: "sink" }), /field 'id'/],
    ["an id that is not a string", SyscallOp.Send, () => encode({ id: 42, to: "sink" }), /field 'id'.*string/],
    ["an unknown field", SyscallOp.Send, () => encode({ id: "unk:1", to: "sink", bogus: true }), /'bogus'/],
    ["a negative timeoutMs", SyscallOp.Request, () => encode({ id: "neg:1", to: "sink", timeoutMs: -5 }), /field 'timeoutMs'/],
    ["a fractional timeoutMs", SyscallOp.Request, () => encode({ id: "frac:1", to: "sink", timeoutMs: 1.5 }), /field 'timeoutMs'/],
    ["an unknown syscall op", "explode", () => encode({ id: "boom:1", to: "sink" }), /unknown syscall 'explode'/],
    ["an oversized payload (300 KiB)", SyscallOp.Send, () => encode({ id: "big:1", to: "sink", body: "x".repeat(300 * 1024) }), /exceeds the limit/],
    ["a 'to' with a wildcard", SyscallOp.Send, () => encode({ id: "wild:1", to: "a.*" }), /field 'to'/],
    ["a 'to' with a full wildcard", SyscallOp.Send, () => encode({ id: "wild:2", to: ">" }), /field 'to'/],
    ["a 'to' with a control character", SyscallOp.Send, () => encode({ id: "ctl:1", to: "a\u0000" }), /field 'to'/],
    ["a 'to' that is not a string", SyscallOp.Send, () => encode({ id: "tonum:1", to: 7 }), /field 'to'/],
    ["an observation of an unknown kind", SyscallOp.Record, () => encode({ id: "obs:1", observed: [{ kind: "disk", value: 1 }] }), /field 'observed/],
    ["a reply error with a code outside the closed set", SyscallOp.Reply, () => encode({ id: "rc:1", inReplyTo: "01ARZ3NDEKTSV4RRFFQ69G5FAV", error: { code: "oops", message: "x" } }), /field 'error.code'/],
    ["a send with reply-only fields", SyscallOp.Send, () => encode({ id: "mix:1", to: "sink", inReplyTo: "01ARZ3NDEKTSV4RRFFQ69G5FAV" }), /belong to reply/],
    ["a send with no target", SyscallOp.Send, () => encode({ id: "noto:1", body: 1 }), /needs a 'to'/],
    ["a record with nothing observed", SyscallOp.Record, () => encode({ id: "rec:1" }), /non-empty 'observed'/],
  ];

  it.each(cases)("answers %s with bad_request, logs the rejection, and keeps serving", async (_what, op, payload, message) => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    const data = payload();
    const reply = await raw(nc, "prober", op, data);
    const error = expectError(reply, "bad_request", message);
    await expectRefusalLogged(from, "prober", error);
    await expectStillServing(nc);
  });

  it("answers malformed msgpack (the reserved byte 0xc1) with bad_request naming msgpack, and keeps serving", async () => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    const reply = await raw(nc, "prober", SyscallOp.Send, new Uint8Array([0xc1]));
    const error = expectError(reply, "bad_request", /not valid msgpack/);
    await expectRefusalLogged(from, "prober", error);
    await expectStillServing(nc);
  });

  it("refuses a syscall whose body holds the reserved msgpack byte 0xc1 instead of writing it to the log", async () => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    // { id: "c1:1", to: "sink", body: <0xc1> }: a map whose last value is not valid msgpack.
    const data = new Uint8Array([0x83, ...fixstr("id"), ...fixstr("c1:1"), ...fixstr("to"), ...fixstr("sink"), ...fixstr("body"), 0xc1]);
    const reply = await raw(nc, "prober", SyscallOp.Send, data);
    const error = expectError(reply, "bad_request", /msgpack/);
    await expectRefusalLogged(from, "prober", error);
    await expectStillServing(nc);
  });

  it("answers a send to an unregistered agent with not_found and logs the denial", async () => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    const reply = await raw(nc, "prober", SyscallOp.Send, encode({ id: "ghost:1", to: "ghost", body: "anyone?" }));
    const error = expectError(reply, "not_found", /ghost/);
    await expectRefusalLogged(from, "prober", error);
    const denied = (await logFrom(from)).find((e) => e["type"] === EventType.Denied);
    expect(denied?.["to"]).toBe("ghost");
    await expectStillServing(nc);
  });

  it("answers a reply to a request that was never delivered to the replier with forbidden, and a reply to no request with not_found", async () => {
    const prober = await connectAs("prober");
    const request = await raw(prober, "prober", SyscallOp.Request, encode({ id: "ask:1", to: "sink", body: "question", timeoutMs: 600_000 }));
    expect(request.ok, JSON.stringify(request)).toBe(true);
    if (!request.ok) return;
    const requestId = request.result.event;

    const bystander = await connectAs("bystander");
    let from = (await lastSeq()) + 1;
    const stolen = await raw(bystander, "bystander", SyscallOp.Reply, encode({ id: "steal:1", inReplyTo: requestId, body: "my answer" }));
    const forbidden = expectError(stolen, "forbidden", /not delivered to bystander/);
    await expectRefusalLogged(from, "bystander", forbidden);

    from = (await lastSeq()) + 1;
    const nowhere = await raw(bystander, "bystander", SyscallOp.Reply, encode({ id: "steal:2", inReplyTo: "01ARZ3NDEKTSV4RRFFQ69G5FAV", body: "x" }));
    const notFound = expectError(nowhere, "not_found", /01ARZ3NDEKTSV4RRFFQ69G5FAV/);
    await expectRefusalLogged(from, "bystander", notFound);

    // The requester itself is not the addressee either.
    from = (await lastSeq()) + 1;
    const self = await raw(prober, "prober", SyscallOp.Reply, encode({ id: "self-answer:1", inReplyTo: requestId, body: "x" }));
    const selfError = expectError(self, "forbidden", /not delivered to prober/);
    await expectRefusalLogged(from, "prober", selfError);

    // The addressee can answer, once.
    const sink = await connectAs("sink");
    const answer = await raw(sink, "sink", SyscallOp.Reply, encode({ id: "answer:1", inReplyTo: requestId, body: "the answer" }));
    expect(answer.ok, JSON.stringify(answer)).toBe(true);
    from = (await lastSeq()) + 1;
    const again = await raw(sink, "sink", SyscallOp.Reply, encode({ id: "answer:2", inReplyTo: requestId, body: "another answer" }));
    const conflict = expectError(again, "conflict", /already answered/);
    await expectRefusalLogged(from, "sink", conflict);
    await expectStillServing(prober);
  });

  const badAcks: Array<[string, () => Uint8Array, RegExp]> = [
    ["an ack list that is not a list", () => encode({ ack: "x" }), /ack field 'ack' must be array/],
    ["an unknown field", () => encode({ ack: [1], bogus: true }), /ack has a field it may not carry: 'bogus'/],
    ["a sequence of zero", () => encode({ ack: [0] }), /ack field 'ack\.0'/],
    ["a fractional sequence", () => encode({ nak: [1.5] }), /ack field 'nak\.0'/],
    ["a sequence that is a string", () => encode({ working: ["7"] }), /ack field 'working\.0'/],
    ["a resend that is not a boolean", () => encode({ resend: "yes" }), /ack field 'resend'/],
    ["more than 4096 sequences", () => encode({ ack: Array.from({ length: 4097 }, (_, i) => i + 1) }), /ack field 'ack'/],
    ["a msgpack array instead of a map", () => encode([1, 2, 3]), /must be a msgpack map/],
    ["malformed msgpack (the reserved byte 0xc1)", () => new Uint8Array([0x81, ...fixstr("ack"), 0xc1]), /not valid msgpack/],
    ["an empty payload", () => new Uint8Array(0), /empty payload/],
    ["an oversized payload (300 KiB)", () => encode({ ack: [1], pad: "x".repeat(300 * 1024) }), /exceeds the limit/],
  ];

  it.each(badAcks)("answers a malformed ack (%s) with bad_request, logs the rejection, and keeps serving", async (_what, payload, message) => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    const reply = await raw(nc, "prober", SyscallOp.Ack, payload());
    const error = expectError(reply, "bad_request", message);
    await expectRefusalLogged(from, "prober", error);
    const rejected = (await logFrom(from)).filter((e) => e["type"] === EventType.Rejected && e["actor"] === "prober");
    expect(rejected.map((e) => e["subject"])).toEqual([subjects.syscall("prober", SyscallOp.Ack)]);
    await expectStillServing(nc);
  });

  it("answers a well-formed ack of nothing it holds without logging anything (the control for the malformed acks)", async () => {
    const nc = await connectAs("prober");
    const from = (await lastSeq()) + 1;
    const reply = await raw(nc, "prober", SyscallOp.Ack, encode({ ack: [999_999], working: [999_998], nak: [999_997], resend: true }));
    expect(reply.ok, JSON.stringify(reply)).toBe(true);
    // The next send is logged after anything the ack could have caused.
    await expectStillServing(nc);
    const events = await logFrom(from);
    expect(events.filter((e) => e["type"] === EventType.Rejected || e["type"] === EventType.Denied)).toEqual([]);
    expect(events.filter((e) => e["actor"] === "prober").map((e) => e["type"])).toEqual([EventType.Message]);
  });

  it("keeps the kernel process alive and free of unexpected failures after all of it", async () => {
    const nc = await connectAs("prober");
    await expectStillServing(nc);
    expect(h.kernelLog.filter((line) => line.includes("syscall failed unexpectedly"))).toEqual([]);
    const status = await h.admin.status();
    expect(status.seq).toBeGreaterThan(0);
    expect(status.seq).toBeLessThanOrEqual(await lastSeq());
  });
});
