/**
 * The perimeter, proved against a real nats-server: what an agent's, the admin's and the kernel's
 * credentials can and cannot do (promise 1, complete mediation; promise 4, the log is
 * append-only), and that identity cannot be forged (promise 2). Agents connect raw, as a process
 * in any language would, so nothing here relies on the SDK behaving.
 *
 * An agent holds no JetStream permission at all: it publishes only its own syscalls
 * (`mx.sys.<self>.>`, acks included) and receives only its own syscall answers (`mx.rep.<self>.>`)
 * and its own deliveries (`mx.dlv.<self>`), which the kernel hands over from the agent's durable
 * consumers once its state holds them.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AdminOp,
  ChainVerifier,
  EventType,
  Header,
  LOG_STREAM,
  SyscallOp,
  consumers,
  decodeMap,
  encode,
  serviceSubjects,
  subjects,
  syscallId,
  type AckRequest,
  type SyscallReply,
} from "../../src/protocol/mod.js";
import {
  connectNats,
  jetstream,
  jetstreamManager,
  natsHeaders,
  readLog,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
} from "../../src/transport/connection.js";
import { keyFiles, verifySignature } from "../../src/transport/identity.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { AdminClient } from "../../src/runtime/admin-client.js";
import { defineAgent, MaxwellError, type Message } from "../../src/sdk/mod.js";
import { eventually, startHarness, until, type Harness } from "../support/harness.js";

const PERMISSIONS_VIOLATION = /Permissions Violation/i;

/** Verifies the whole log's hash chain and checkpoints with the kernel's public key. */
async function verifyLog(h: Harness, js: JetStreamClient, jsm: JetStreamManager) {
  const kernelKey = readFileSync(keyFiles(h.layout.keys).kernelPublic, "utf8").trim();
  const verifier = new ChainVerifier(kernelKey, verifySignature);
  // The last sequence first: the kernel may append (a checkpoint) while we read, and the read
  // always reaches at least this far.
  const lastSeq = (await jsm.streams.info(LOG_STREAM)).state.last_seq;
  for await (const e of readLog(js, jsm, { fromSeq: 1 })) verifier.add(e);
  return verifier.finish(lastSeq);
}

/** Errors the server reported asynchronously on a connection (e.g. a refused publish). */
interface Violations {
  errors: Error[];
  /** Waits for the server to refuse `operation` on exactly `subject`. */
  waitFor(operation: "Publish" | "Subscription", subject: string): Promise<Error>;
}

function watchViolations(nc: NatsConnection): Violations {
  const errors: Error[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error") errors.push(s.error);
    }
  })();
  const find = (operation: string, subject: string) =>
    errors.find((e) => PERMISSIONS_VIOLATION.test(e.message) && e.message.includes(`${operation} to "${subject}"`));
  return {
    errors,
    async waitFor(operation, subject) {
      await until(() => find(operation, subject) !== undefined, `a permissions violation for ${operation} to ${subject}`);
      return find(operation, subject) as Error;
    },
  };
}

/** One message received on a delivery subject. */
interface Delivered {
  subject: string;
  data: Uint8Array;
  seq: number;
  id: string;
  redelivered: boolean;
}

/** What arrived on a delivery subject, raw, as any process subscribed there would see it. */
interface Deliveries {
  got: Delivered[];
  waitFor(match: (d: Delivered) => boolean, what: string): Promise<Delivered>;
}

/** Subscribes `nc` to `agent`'s delivery subject; resolves once the server has the subscription. */
async function watchDeliveries(nc: NatsConnection, agent: string): Promise<Deliveries> {
  const got: Delivered[] = [];
  nc.subscribe(subjects.delivery(agent), {
    callback: (err, m) => {
      if (err) return;
      let event: Record<string, unknown> = {};
      try {
        event = decodeMap(m.data);
      } catch {
        // Kept with seq 0 and no id: a test that expects nothing here still sees it.
      }
      got.push({
        subject: m.subject,
        data: new Uint8Array(m.data),
        seq: typeof event["seq"] === "number" ? event["seq"] : 0,
        id: typeof event["id"] === "string" ? event["id"] : "",
        redelivered: m.headers?.has(Header.Redelivered) ?? false,
      });
    },
  });
  await nc.flush();
  return {
    got,
    async waitFor(match, what) {
      await until(() => got.some(match), what);
      return got.find(match) as Delivered;
    },
  };
}

/** An ack on the agent's own ack subject, sent as a request so its answer fences it. */
async function ackAs(nc: NatsConnection, agent: string, body: AckRequest | Record<string, unknown>): Promise<SyscallReply> {
  const m = await nc.request(subjects.syscall(agent, SyscallOp.Ack), encode(body), { timeout: 10_000 });
  return decodeMap(m.data) as unknown as SyscallReply;
}

describe("perimeter", () => {
  let h: Harness;
  let kernelNc: NatsConnection;
  let kjs: JetStreamClient;
  let kjsm: JetStreamManager;
  const opened: NatsConnection[] = [];
  const creds = new Map<string, string>();
  let fences = 0;

  /** Connects raw with a registered identity's credential, inside its own inbox prefix. */
  async function connectAs(name: string): Promise<NatsConnection> {
    const c = creds.get(name);
    if (c === undefined) throw new Error(`${name} is not registered in this test file`);
    const nc = await connectNats({
      servers: h.url,
      creds: new TextEncoder().encode(c),
      name: `test:${name}`,
      inboxPrefix: subjects.inboxPrefix(name),
      reconnect: false,
    });
    opened.push(nc);
    return nc;
  }

  async function register(name: string, kind: "agent" | "principal" = "agent", groups: string[] = []): Promise<void> {
    const r = await h.register(name, kind, groups);
    creds.set(name, r.creds);
  }

  /** A syscall on the actor's own subject, answered by the kernel; the reply decoded. */
  async function syscall(nc: NatsConnection, actor: string, op: SyscallOp, body: Record<string, unknown>, headers?: ReturnType<typeof natsHeaders>): Promise<SyscallReply> {
    const m = await nc.request(subjects.syscall(actor, op), encode(body), { timeout: 10_000, ...(headers ? { headers } : {}) });
    return decodeMap(m.data) as unknown as SyscallReply;
  }

  /** Every log entry, decoded, read with the kernel's credential. */
  async function logEntries(fromSeq = 1): Promise<Array<{ seq: number; subject: string; event: Record<string, unknown> }>> {
    const out: Array<{ seq: number; subject: string; event: Record<string, unknown> }> = [];
    for await (const e of readLog(kjs, kjsm, { fromSeq })) out.push({ seq: e.seq, subject: e.subject, event: decodeMap(e.data) });
    return out;
  }

  async function lastSeq(): Promise<number> {
    return (await kjsm.streams.info(LOG_STREAM)).state.last_seq;
  }

  /** A durable consumer's counts, read with the kernel's credential. */
  async function consumerCounts(name: string): Promise<{ pending: number; ackPending: number }> {
    const info = await kjsm.consumers.info(LOG_STREAM, name);
    return { pending: info.num_pending, ackPending: info.num_ack_pending };
  }

  beforeAll(async () => {
    h = await startHarness();
    kernelNc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "test:kernel", reconnect: false });
    kjsm = await jetstreamManager(kernelNc);
    kjs = jetstream(kernelNc);
    await register("mallory");
    await register("victim", "agent", ["workers"]);
  });

  afterAll(async () => {
    await Promise.allSettled(opened.map((nc) => nc.close()));
    await kernelNc?.close();
    await h?.close();
  });

  describe("an agent credential", () => {
    it("refuses an agent credential publishing to another agent's syscall subjects, and nothing is done in that agent's name", async () => {
      const nc = await connectAs("mallory");
      const v = watchViolations(nc);
      for (const op of [SyscallOp.Send, SyscallOp.Request, SyscallOp.Reply, SyscallOp.Record]) {
        nc.publish(subjects.syscall("victim", op), encode({ id: `forged-${op}:1`, to: "victim", body: "as victim" }));
        const err = await v.waitFor("Publish", subjects.syscall("victim", op));
        expect(err.message).toMatch(PERMISSIONS_VIOLATION);
      }
      // A syscall of mallory's own on the same connection: the kernel sees it after anything
      // mallory published before it, so once it is answered the log holds all of it.
      const fence = await syscall(nc, "mallory", SyscallOp.Send, { id: "fence:1", to: "victim", body: "fence" });
      expect(fence.ok).toBe(false);

      const entries = await logEntries();
      expect(entries.filter((e) => e.event["actor"] === "victim")).toEqual([]);
      expect(entries.filter((e) => typeof e.event["subject"] === "string" && (e.event["subject"] as string).includes(".victim."))).toEqual([]);
      expect(entries.filter((e) => e.subject === subjects.logInbox("victim"))).toEqual([]);
      // Nothing is waiting for victim, or held for it unacknowledged (the kernel reads every
      // agent's consumers, so their delivered position says nothing; these counts do).
      expect(await consumerCounts(consumers.inbox("victim"))).toEqual({ pending: 0, ackPending: 0 });
      expect(await consumerCounts(consumers.replies("victim"))).toEqual({ pending: 0, ackPending: 0 });
    });

    it("rejects a request an agent addresses to another agent's syscall subject", async () => {
      const nc = await connectAs("mallory");
      await expect(nc.request(subjects.syscall("victim", SyscallOp.Send), encode({ id: "forged:2", to: "victim" }), { timeout: 5000 })).rejects.toThrow(
        PERMISSIONS_VIOLATION,
      );
    });

    it.each([
      ["another agent's inbox", "mx.rep.victim.>"],
      ["another agent's delivery subject", "mx.dlv.victim"],
      ["every agent's delivery subject", "mx.dlv.>"],
      ["the log", "mx.log.>"],
      ["another agent's deliveries in the log", "mx.log.in.victim"],
      ["its own deliveries in the log, bypassing the kernel", "mx.log.in.mallory"],
      ["other actors' syscalls", "mx.sys.>"],
      ["the JetStream API", "$JS.API.>"],
      ["JetStream acks", "$JS.ACK.>"],
      ["the kernel's inboxes (where JetStream hands it the agents' consumers)", "_INBOX.>"],
      ["the services behind the kernel (model gateway, tools, memory)", "mx.svc.>"],
      ["everything", ">"],
    ])("refuses an agent credential subscribing to %s (%s)", async (_what, subject) => {
      const nc = await connectAs("mallory");
      const v = watchViolations(nc);
      const got: string[] = [];
      const sub = nc.subscribe(subject, { callback: (err, m) => { if (!err) got.push(m.subject); } });
      const err = await v.waitFor("Subscription", subject);
      expect(err.message).toMatch(PERMISSIONS_VIOLATION);
      await expect(sub.closed).resolves.toBeInstanceOf(Error);

      // Traffic the subscription would have seen: a log write (mallory's denied send lands in
      // the log before the kernel answers), a message into victim's inbox and one on victim's
      // delivery subject, all published by the kernel before the answer mallory waits for, so
      // they would have arrived first.
      kernelNc.publish(`${subjects.inboxPrefix("victim")}.probe`, encode({ probe: true }));
      kernelNc.publish(subjects.delivery("victim"), encode({ probe: true }));
      await kernelNc.flush();
      const fence = await syscall(nc, "mallory", SyscallOp.Send, { id: `sub-fence-${++fences}:1`, to: "victim", body: "x" });
      expect(fence.ok).toBe(false);
      expect(got).toEqual([]);
    });

    it("lets an agent publish its own syscalls and receive its own deliveries, as the stored bytes, on mx.dlv.<self> (the control for the refusals below)", async () => {
      await register("ctl-boss", "principal");
      await register("ctl", "agent", ["coordinators"]);
      await register("ctl-worker", "agent", ["workers"]);
      const nc = await connectAs("ctl");
      const v = watchViolations(nc);
      const dlv = await watchDeliveries(nc, "ctl");
      const sent = await syscall(await connectAs("ctl-boss"), "ctl-boss", SyscallOp.Send, { id: "ctl-job:1", to: "ctl", body: { job: 1 } });
      expect(sent.ok, JSON.stringify(sent)).toBe(true);
      if (!sent.ok) return;

      const got = await dlv.waitFor((d) => d.id === sent.result.event, "ctl's delivery");
      expect(got.subject).toBe(subjects.delivery("ctl"));
      expect(got.seq).toBe(sent.result.seq);
      expect(got.redelivered).toBe(false);
      const stored = await kjsm.streams.getMessage(LOG_STREAM, { seq: sent.result.seq });
      expect(stored?.subject).toBe(subjects.logInbox("ctl"));
      expect(got.data).toEqual(new Uint8Array(stored?.data ?? []));

      // Its own syscall, citing the delivery, is accepted.
      const fwd = await syscall(nc, "ctl", SyscallOp.Send, { id: "ctl-fwd:1", to: "ctl-worker", body: "fwd", causation: sent.result.event });
      expect(fwd.ok, JSON.stringify(fwd)).toBe(true);

      // The delivery is held unacknowledged until ctl acks it on its own ack subject.
      expect(await consumerCounts(consumers.inbox("ctl"))).toEqual({ pending: 0, ackPending: 1 });
      const acked = await ackAs(nc, "ctl", { ack: [sent.result.seq] });
      expect(acked.ok, JSON.stringify(acked)).toBe(true);
      await eventually(async () => (await consumerCounts(consumers.inbox("ctl"))).ackPending === 0, "ctl's ack to reach JetStream");
      expect(await consumerCounts(consumers.inbox("ctl"))).toEqual({ pending: 0, ackPending: 0 });

      // Acks are transport-level: the log holds ctl's send and nothing else in ctl's name.
      const byCtl = (await logEntries()).filter((e) => e.event["actor"] === "ctl");
      expect(byCtl.map((e) => e.event["type"])).toEqual([EventType.Message]);
      expect(v.errors).toEqual([]);
    });

    it("refuses an agent credential subscribing to another agent's delivery subject, and it receives none of that agent's deliveries", async () => {
      await register("dlv-boss", "principal");
      await register("dlv-a", "agent", ["workers"]);
      await register("dlv-b", "agent", ["workers"]);
      const a = await connectAs("dlv-a");
      const atA = await watchDeliveries(a, "dlv-a");
      const b = await connectAs("dlv-b");
      const vb = watchViolations(b);
      const stolen: string[] = [];
      const spy = b.subscribe(subjects.delivery("dlv-a"), { callback: (err, m) => { if (!err) stolen.push(m.subject); } });
      expect((await vb.waitFor("Subscription", subjects.delivery("dlv-a"))).message).toMatch(PERMISSIONS_VIOLATION);
      await expect(spy.closed).resolves.toBeInstanceOf(Error);
      const atB = await watchDeliveries(b, "dlv-b");

      const boss = await connectAs("dlv-boss");
      const toA = await syscall(boss, "dlv-boss", SyscallOp.Send, { id: "dlv-a-job:1", to: "dlv-a", body: "for a" });
      const toB = await syscall(boss, "dlv-boss", SyscallOp.Send, { id: "dlv-b-job:1", to: "dlv-b", body: "for b" });
      expect(toA.ok && toB.ok, JSON.stringify([toA, toB])).toBe(true);
      if (!toA.ok || !toB.ok) return;
      await atA.waitFor((d) => d.id === toA.result.event, "dlv-a's delivery");
      await atB.waitFor((d) => d.id === toB.result.event, "dlv-b's delivery");

      expect(stolen).toEqual([]);
      expect(new Set(atB.got.map((d) => d.id))).toEqual(new Set([toB.result.event]));
      expect(new Set(atA.got.map((d) => d.id))).toEqual(new Set([toA.result.event]));
      expect((await ackAs(a, "dlv-a", { ack: [toA.result.seq] })).ok).toBe(true);
      expect((await ackAs(b, "dlv-b", { ack: [toB.result.seq] })).ok).toBe(true);
    });

    it("refuses an agent acknowledging another agent's delivery: through its own ack subject, the other's, or a JetStream ack", async () => {
      await register("ack-boss", "principal");
      await register("ack-a", "agent", ["workers"]);
      await register("ack-b", "agent", ["workers"]);
      const a = await connectAs("ack-a");
      const atA = await watchDeliveries(a, "ack-a");
      const b = await connectAs("ack-b");
      const vb = watchViolations(b);
      const boss = await connectAs("ack-boss");
      const sent = await syscall(boss, "ack-boss", SyscallOp.Send, { id: "ack-job:1", to: "ack-a", body: "for a" });
      expect(sent.ok, JSON.stringify(sent)).toBe(true);
      if (!sent.ok) return;
      const seq = sent.result.seq;
      const first = await atA.waitFor((d) => d.id === sent.result.event, "ack-a's delivery");
      expect(first.redelivered).toBe(false);

      // B names A's delivery in acks on its own subject: they apply to B's deliveries only.
      // Each is answered, so the kernel has applied it before the next step.
      await ackAs(b, "ack-b", { ack: [seq] });
      await ackAs(b, "ack-b", { working: [seq], nak: [seq], ack: [seq] });
      // B cannot publish on A's ack subject, nor ack through JetStream.
      b.publish(subjects.syscall("ack-a", SyscallOp.Ack), encode({ ack: [seq] }));
      await vb.waitFor("Publish", subjects.syscall("ack-a", SyscallOp.Ack));
      const jsAck = `$JS.ACK.${LOG_STREAM}.${consumers.inbox("ack-a")}.1.${seq}.1.${Date.now()}000000.0`;
      b.publish(jsAck, new TextEncoder().encode("+ACK"));
      await vb.waitFor("Publish", jsAck);
      await ackAs(b, "ack-b", { ack: [] });

      // A's delivery is still A's: unacknowledged at JetStream, and handed again when A asks.
      expect(await consumerCounts(consumers.inbox("ack-a"))).toEqual({ pending: 0, ackPending: 1 });
      expect((await ackAs(a, "ack-a", { resend: true })).ok).toBe(true);
      const again = await atA.waitFor((d) => d.id === sent.result.event && d.redelivered, "ack-a's delivery, handed again");
      expect(again.data).toEqual(first.data);

      // A acks it itself: then it is settled and not handed again.
      expect((await ackAs(a, "ack-a", { ack: [seq] })).ok).toBe(true);
      await eventually(async () => (await consumerCounts(consumers.inbox("ack-a"))).ackPending === 0, "ack-a's own ack to reach JetStream");
      const handed = atA.got.length;
      expect((await ackAs(a, "ack-a", { resend: true })).ok).toBe(true);
      // A later delivery on the same subject fences the resend: anything it handed came first.
      const fence = await syscall(boss, "ack-boss", SyscallOp.Send, { id: "ack-fence:1", to: "ack-a", body: "fence" });
      if (!fence.ok) throw new Error(JSON.stringify(fence));
      await atA.waitFor((d) => d.id === fence.result.event, "the fence delivery");
      expect(atA.got.slice(handed).map((d) => d.id)).toEqual([fence.result.event]);
      expect((await ackAs(a, "ack-a", { ack: [fence.result.seq] })).ok).toBe(true);
    });

    it.each([
      ["read its own consumer's info", subjects.consumerInfo(consumers.inbox("mallory")), {}],
      ["pull from its own inbox consumer", subjects.consumerNext(consumers.inbox("mallory")), { batch: 1, no_wait: true }],
      ["pull from its own replies consumer", subjects.consumerNext(consumers.replies("mallory")), { batch: 1, no_wait: true }],
      ["pull from another agent's inbox consumer", subjects.consumerNext(consumers.inbox("victim")), { batch: 1, expires: 1_000_000_000 }],
      ["pull from another agent's replies consumer", subjects.consumerNext(consumers.replies("victim")), { batch: 1, expires: 1_000_000_000 }],
      ["read another agent's consumer info", subjects.consumerInfo(consumers.inbox("victim")), {}],
      ["create a consumer on the log", `$JS.API.CONSUMER.CREATE.${LOG_STREAM}`, { stream_name: LOG_STREAM, config: { ack_policy: "none" } }],
      ["delete its own consumer", `$JS.API.CONSUMER.DELETE.${LOG_STREAM}.${consumers.inbox("mallory")}`, {}],
      ["delete another agent's consumer", `$JS.API.CONSUMER.DELETE.${LOG_STREAM}.${consumers.inbox("victim")}`, {}],
      ["delete the log stream", `$JS.API.STREAM.DELETE.${LOG_STREAM}`, {}],
      ["purge the log stream", `$JS.API.STREAM.PURGE.${LOG_STREAM}`, {}],
      ["delete a log entry", `$JS.API.STREAM.MSG.DELETE.${LOG_STREAM}`, { seq: 1 }],
      ["update the log stream", `$JS.API.STREAM.UPDATE.${LOG_STREAM}`, { name: LOG_STREAM, deny_delete: false, deny_purge: false }],
      ["create a stream", "$JS.API.STREAM.CREATE.EVIL", { name: "EVIL", subjects: ["evil.>"] }],
      ["read the log stream's info", `$JS.API.STREAM.INFO.${LOG_STREAM}`, {}],
      ["read a log entry", `$JS.API.STREAM.MSG.GET.${LOG_STREAM}`, { seq: 1 }],
      ["read a log entry directly", `$JS.API.DIRECT.GET.${LOG_STREAM}`, { seq: 1 }],
      ["ask for the JetStream account info", "$JS.API.INFO", {}],
    ])("refuses an agent credential that tries to %s through the JetStream API", async (_what, subject, body) => {
      const nc = await connectAs("mallory");
      const before = await kjsm.streams.info(LOG_STREAM);
      await expect(nc.request(subject, new TextEncoder().encode(JSON.stringify(body)), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);
      const after = await kjsm.streams.info(LOG_STREAM);
      expect(after.config.deny_delete).toBe(true);
      expect(after.config.deny_purge).toBe(true);
      expect(after.state.first_seq).toBe(1);
      expect(after.state.messages).toBeGreaterThanOrEqual(before.state.messages);
      expect(after.state.messages).toBe(after.state.last_seq);
      const streams: string[] = [];
      for await (const name of kjsm.streams.names()) streams.push(name);
      expect(streams).toEqual([LOG_STREAM]);
      for (const agent of ["mallory", "victim"]) {
        for (const name of [consumers.inbox(agent), consumers.replies(agent)]) {
          expect((await kjsm.consumers.info(LOG_STREAM, name)).config.durable_name).toBe(name);
        }
      }
    });

    it.each([
      ["its own deliveries", consumers.inbox("mallory")],
      ["another agent's deliveries", consumers.inbox("victim")],
    ])("refuses an agent credential acknowledging %s through a JetStream ack subject", async (_what, consumer) => {
      const nc = await connectAs("mallory");
      const v = watchViolations(nc);
      const subject = `$JS.ACK.${LOG_STREAM}.${consumer}.1.1.1.${Date.now()}000000.0`;
      for (const payload of ["+ACK", "+NXT", "+WPI", "-NAK", "+TERM"]) nc.publish(subject, new TextEncoder().encode(payload));
      expect((await v.waitFor("Publish", subject)).message).toMatch(PERMISSIONS_VIOLATION);
      await expect(nc.request(subject, new TextEncoder().encode("+ACK"), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);
    });

    it("refuses an agent credential writing to the log directly, as a request or a plain publish", async () => {
      const nc = await connectAs("mallory");
      const v = watchViolations(nc);
      const fake = encode({ v: 1, type: EventType.Message, kind: "send", actor: "boss", principal: "boss", to: "victim", body: "forged" });
      await expect(nc.request(subjects.logInbox("victim"), fake, { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);
      nc.publish(subjects.logInbox("mallory"), fake);
      await v.waitFor("Publish", subjects.logInbox("mallory"));
      const fence = await syscall(nc, "mallory", SyscallOp.Send, { id: "log-fence:1", to: "victim", body: "x" });
      expect(fence.ok).toBe(false);

      const entries = await logEntries();
      expect(entries.filter((e) => e.subject === subjects.logInbox("victim") || e.subject === subjects.logInbox("mallory"))).toEqual([]);
      expect(entries.filter((e) => e.event["body"] === "forged")).toEqual([]);
    });
  });

  describe("the admin and kernel credentials", () => {
    it("refuses the admin credential deleting, purging, editing or reconfiguring the log stream, or any other JetStream call", async () => {
      const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("admin"), name: "test:admin", reconnect: false });
      opened.push(nc);
      const before = await kjsm.streams.info(LOG_STREAM);
      expect(before.state.last_seq).toBeGreaterThan(0);
      const empty = new TextEncoder().encode("{}");
      for (const api of [
        `STREAM.DELETE.${LOG_STREAM}`,
        `STREAM.PURGE.${LOG_STREAM}`,
        `STREAM.MSG.DELETE.${LOG_STREAM}`,
        `STREAM.UPDATE.${LOG_STREAM}`,
        `STREAM.INFO.${LOG_STREAM}`,
        `CONSUMER.CREATE.${LOG_STREAM}`,
        `DIRECT.GET.${LOG_STREAM}`,
        "INFO",
      ]) {
        await expect(nc.request(`$JS.API.${api}`, empty, { timeout: 5000 }), api).rejects.toThrow(PERMISSIONS_VIOLATION);
      }
      await expect(nc.request(subjects.logInbox("victim"), encode({ forged: true }), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);

      const after = await kjsm.streams.info(LOG_STREAM);
      expect(after.config.deny_delete).toBe(true);
      expect(after.config.deny_purge).toBe(true);
      expect(after.state.first_seq).toBe(1);
      expect(after.state.messages).toBe(after.state.last_seq);
      expect(after.state.last_seq).toBeGreaterThanOrEqual(before.state.last_seq);
    });

    it("lets the admin credential read the whole log in order, through the kernel", async () => {
      const admin = await AdminClient.connect(h.url, h.layout.credsOf("admin"));
      try {
        const seqs: number[] = [];
        const types: unknown[] = [];
        let from = 1;
        let end = 0;
        for (;;) {
          const batch = await admin.read({ from, max: 7 });
          end = batch.lastSeq;
          for (const e of batch.entries) {
            seqs.push(e.seq);
            types.push(decodeMap(e.data)["type"]);
          }
          const last = batch.entries.at(-1);
          if (!last || last.seq >= batch.lastSeq) break;
          from = last.seq + 1;
        }
        expect(seqs[0]).toBe(1);
        expect(seqs.length).toBeGreaterThanOrEqual(end);
        expect(seqs).toEqual(seqs.map((_, i) => i + 1));
        expect(types[0]).toBe(EventType.Genesis);
        expect(types).toContain(EventType.IdentityRegistered);
      } finally {
        await admin.close();
      }
    });

    it("refuses even the kernel credential deleting a log entry or purging the log (the stream is deny_delete, deny_purge)", async () => {
      const before = await kjsm.streams.info(LOG_STREAM);
      const first = await kjsm.streams.getMessage(LOG_STREAM, { seq: 1 });
      await expect(kjsm.streams.deleteMessage(LOG_STREAM, 1)).rejects.toThrow(/message delete not permitted/);
      await expect(kjsm.streams.deleteMessage(LOG_STREAM, 1, true)).rejects.toThrow(/message delete not permitted/);
      await expect(kjsm.streams.purge(LOG_STREAM)).rejects.toThrow(/purge not permitted/);
      await expect(kjsm.streams.purge(LOG_STREAM, { filter: subjects.logKernel("genesis") })).rejects.toThrow(/purge not permitted/);

      const after = await kjsm.streams.info(LOG_STREAM);
      expect(after.state.first_seq).toBe(1);
      expect(after.state.messages).toBe(after.state.last_seq);
      expect(after.state.messages).toBeGreaterThanOrEqual(before.state.messages);
      const still = await kjsm.streams.getMessage(LOG_STREAM, { seq: 1 });
      expect(still?.data).toEqual(first?.data);
    });
  });

  describe("a service credential", () => {
    async function connectService(service: string): Promise<NatsConnection> {
      const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf(serviceSubjects.identity(service)), name: `test:svc-${service}`, reconnect: false });
      opened.push(nc);
      return nc;
    }

    it("refuses an agent calling a service directly: only the kernel reaches the model gateway, tools and memory", async () => {
      const nc = await connectAs("mallory");
      for (const service of ["llm", "tools", "memory"]) {
        await expect(nc.request(serviceSubjects.call(service, "call"), encode({ target: "db-drop", args: {} }), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);
      }
    });

    it("lets a service answer the kernel's calls, and publish nowhere else", async () => {
      const tools = await connectService("tools");
      const v = watchViolations(tools);
      tools.subscribe(serviceSubjects.all("tools"), { callback: (_e, m) => void m.respond(encode({ ok: true, result: "answered" })) });
      await tools.flush();
      const answer = decodeMap((await kernelNc.request(serviceSubjects.call("tools", "call"), encode({}), { timeout: 5000 })).data);
      expect(answer).toEqual({ ok: true, result: "answered" });
      for (const subject of [subjects.logInbox("victim"), subjects.delivery("victim"), subjects.syscall("victim", SyscallOp.Send), `${subjects.inboxPrefix("victim")}.x`, serviceSubjects.call("llm", "complete"), subjects.admin("register")]) {
        tools.publish(subject, encode({ forged: true }));
        const err = await v.waitFor("Publish", subject);
        expect(err.message).toMatch(PERMISSIONS_VIOLATION);
      }
    });

    it("refuses a service listening to another service's calls or the log", async () => {
      const tools = await connectService("tools");
      const v = watchViolations(tools);
      for (const subject of [serviceSubjects.all("llm"), subjects.logAll(), subjects.delivery("victim")]) {
        tools.subscribe(subject, { callback: () => undefined });
        const err = await v.waitFor("Subscription", subject);
        expect(err.message).toMatch(PERMISSIONS_VIOLATION);
      }
    });
  });

  describe("identity", () => {
    it.each([
      ["actor", { actor: "victim" }, /'actor'.*authenticated connection/],
      ["principal", { principal: "x" }, /'principal'.*authenticated connection/],
    ])("refuses a syscall whose payload names the %s, answers bad_request and logs the rejection", async (field, extra, message) => {
      await register(`forger-${field}`, "agent", ["coordinators"]);
      const name = `forger-${field}`;
      const nc = await connectAs(name);
      const from = (await lastSeq()) + 1;
      const reply = await syscall(nc, name, SyscallOp.Send, { id: `forge-${field}:1`, to: "victim", body: "hi", ...extra });
      expect(reply.ok).toBe(false);
      if (reply.ok) return;
      expect(reply.error.code).toBe("bad_request");
      expect(reply.error.message).toMatch(message);

      const entries = await logEntries(from);
      const rejected = entries.filter((e) => e.event["type"] === EventType.Rejected);
      expect(rejected).toHaveLength(1);
      expect(rejected[0]?.event["actor"]).toBe(name);
      expect(rejected[0]?.event["subject"]).toBe(subjects.syscall(name, SyscallOp.Send));
      expect(rejected[0]?.event["error"]).toEqual(reply.error);
      expect(entries.filter((e) => e.event["type"] === EventType.Message)).toEqual([]);
    });

    it.each(["Mx-Principal", "Mx-Actor"])("refuses a syscall carrying a %s header, answers bad_request and logs the rejection", async (header) => {
      const name = `hdr-${header.toLowerCase()}`;
      await register(name, "agent", ["coordinators"]);
      const nc = await connectAs(name);
      const from = (await lastSeq()) + 1;
      const hdrs = natsHeaders();
      hdrs.set(header, "alice");
      const reply = await syscall(nc, name, SyscallOp.Send, { id: "hdr:1", to: "victim", body: "hi" }, hdrs);
      expect(reply.ok).toBe(false);
      if (reply.ok) return;
      expect(reply.error.code).toBe("bad_request");
      expect(reply.error.message).toMatch(new RegExp(header, "i"));

      const entries = await logEntries(from);
      const rejected = entries.filter((e) => e.event["type"] === EventType.Rejected);
      expect(rejected).toHaveLength(1);
      expect(rejected[0]?.event["actor"]).toBe(name);
      expect(rejected[0]?.event["error"]).toEqual(reply.error);
      expect(entries.filter((e) => e.event["type"] === EventType.Message)).toEqual([]);
    });

    it("stamps the authenticated sender as actor and principal of the message it delivers", async () => {
      await register("sender", "agent", ["coordinators"]);
      await register("receiver", "agent", ["workers"]);
      const nc = await connectAs("sender");
      const hdrs = natsHeaders();
      hdrs.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
      const reply = await syscall(nc, "sender", SyscallOp.Send, { id: "stamp:1", to: "receiver", body: { task: 1 } }, hdrs);
      expect(reply.ok).toBe(true);
      if (!reply.ok) return;
      const stored = await kjsm.streams.getMessage(LOG_STREAM, { seq: reply.result.seq });
      expect(stored?.subject).toBe(subjects.logInbox("receiver"));
      const event = decodeMap(stored?.data ?? new Uint8Array());
      expect(event["type"]).toBe(EventType.Message);
      expect(event["id"]).toBe(reply.result.event);
      expect(event["actor"]).toBe("sender");
      expect(event["principal"]).toBe("sender");
      expect(event["to"]).toBe("receiver");
      expect(event["depth"]).toBe(0);

      const seen: Message[] = [];
      await h.agent(defineAgent({ name: "receiver", onMessage: (m) => void seen.push(m) }), creds.get("receiver") as string);
      await until(() => seen.length === 1, "the delivery to receiver");
      expect(seen[0]?.from).toBe("sender");
      expect(seen[0]?.principal).toBe("sender");
    });

    it("stamps the principal at ingress and carries it along the causal chain: alice → coordinator → worker", async () => {
      await register("alice", "principal");
      await register("coordinator", "agent", ["coordinators"]);
      await register("worker", "agent", ["workers"]);
      const atWorker: Message[] = [];
      const atCoordinator: Message[] = [];
      const answers: unknown[] = [];
      const failures: unknown[] = [];
      await h.agent(
        defineAgent({
          name: "worker",
          onMessage(m) {
            atWorker.push(m);
            return { done: (m.body as { task: string }).task };
          },
        }),
        creds.get("worker") as string,
      );
      await h.agent(
        defineAgent({
          name: "coordinator",
          async onMessage(m, ctx) {
            atCoordinator.push(m);
            try {
              answers.push(await ctx.request("worker", { task: "sub-" + String((m.body as { task: string }).task) }));
            } catch (err) {
              failures.push(err);
            }
          },
        }),
        creds.get("coordinator") as string,
      );

      const aliceNc = await connectAs("alice");
      const alice = new SyscallClient(aliceNc, "alice", { retryForMs: 0 });
      const sent = await alice.call(SyscallOp.Send, { id: syscallId("alice-job", 1), to: "coordinator", body: { task: "report" } });
      await until(() => answers.length + failures.length === 1, "the coordinator's request to be answered");
      expect(failures).toEqual([]);
      expect(answers).toEqual([{ done: "sub-report" }]);

      expect(atCoordinator).toHaveLength(1);
      expect(atCoordinator[0]?.id).toBe(sent.event);
      expect(atCoordinator[0]?.from).toBe("alice");
      expect(atCoordinator[0]?.principal).toBe("alice");
      expect(atCoordinator[0]?.depth).toBe(0);
      // One request reached the worker (a redelivery of it is allowed: at least once).
      expect(new Set(atWorker.map((m) => m.id)).size).toBe(1);
      for (const m of atWorker) {
        expect(m.from).toBe("coordinator");
        expect(m.principal).toBe("alice");
        expect(m.depth).toBe(1);
        expect(m.trace).toBe(atCoordinator[0]?.trace);
      }

      const entries = await logEntries();
      const reply = entries.find((e) => e.event["type"] === EventType.Reply && e.event["inReplyTo"] === atWorker[0]?.id);
      expect(reply?.event["actor"]).toBe("worker");
      expect(reply?.event["to"]).toBe("coordinator");
      expect(reply?.event["principal"]).toBe("alice");
    });

    it("never hands an agent an event its state does not hold: citing each delivery as causation the moment it arrives, under pipelined load, is never refused", async () => {
      await register("dispatcher", "principal");
      await register("forwarder", "agent", ["coordinators"]);
      await register("sink", "agent", ["workers"]);
      const dispatcher = await connectAs("dispatcher");
      const forwarder = await connectAs("forwarder");
      const v = watchViolations(forwarder);
      const rounds = 300;
      const cited = new Set<string>();
      const answers: Array<Promise<string>> = [];
      // The forwarder, subscribed raw on its delivery subject, acts on each delivery the moment
      // it arrives: it cites it in a send (pipelined, without waiting for the answer), then acks.
      forwarder.subscribe(subjects.delivery("forwarder"), {
        callback: (err, m) => {
          if (err) return;
          const delivered = decodeMap(m.data);
          const id = delivered["id"] as string;
          if (!cited.has(id)) {
            cited.add(id);
            const i = cited.size;
            answers.push(
              syscall(forwarder, "forwarder", SyscallOp.Send, { id: `fwd-${i}:1`, to: "sink", body: i, causation: id }).then((r) =>
                r.ok ? "ok" : `${r.error.code}: ${r.error.message.replace(/[0-9A-HJKMNP-TV-Z]{26}/, "<id>")}`,
              ),
            );
          }
          forwarder.publish(subjects.syscall("forwarder", SyscallOp.Ack), encode({ ack: [delivered["seq"]] }));
        },
      });
      await forwarder.flush();
      const jobs = await Promise.all(
        Array.from({ length: rounds }, (_, i) => syscall(dispatcher, "dispatcher", SyscallOp.Send, { id: `job-${i}:1`, to: "forwarder", body: i })),
      );
      expect(jobs.filter((j) => !j.ok)).toEqual([]);
      await until(() => cited.size === rounds, `all ${rounds} deliveries to reach the forwarder`);
      const outcomes = await Promise.all(answers);
      const refused = outcomes.filter((o) => o !== "ok");
      expect(refused, `${refused.length} of ${rounds} citations of a delivered event were refused`).toEqual([]);
      expect(outcomes).toHaveLength(rounds);
      expect(cited).toEqual(new Set(jobs.map((j) => (j.ok ? j.result.event : ""))));
      expect(v.errors).toEqual([]);
      await eventually(async () => (await consumerCounts(consumers.inbox("forwarder"))).ackPending === 0, "the forwarder's acks to reach JetStream");
    });

    it("refuses an agent citing as causation an event that was delivered to a different agent", async () => {
      await register("boss", "principal");
      await register("relay", "agent", ["coordinators"]);
      await register("thief", "agent", ["coordinators"]);
      await register("target", "agent", ["workers"]);
      const boss = new SyscallClient(await connectAs("boss"), "boss", { retryForMs: 0 });
      const job = await boss.call(SyscallOp.Send, { id: syscallId("boss-job", 1), to: "relay", body: "job" });

      // The addressee may cite it, and inherits the boss as principal.
      const relayNc = await connectAs("relay");
      const ok = await syscall(relayNc, "relay", SyscallOp.Send, { id: "relay:1", to: "target", body: "fwd", causation: job.event });
      expect(ok.ok).toBe(true);
      if (!ok.ok) return;
      const forwarded = decodeMap((await kjsm.streams.getMessage(LOG_STREAM, { seq: ok.result.seq }))?.data ?? new Uint8Array());
      expect(forwarded["principal"]).toBe("boss");
      expect(forwarded["causation"]).toBe(job.event);

      // Anyone else citing it to borrow the boss's authority is refused.
      const thiefNc = await connectAs("thief");
      const from = (await lastSeq()) + 1;
      const stolen = await syscall(thiefNc, "thief", SyscallOp.Send, { id: "thief:1", to: "target", body: "as boss", causation: job.event });
      expect(stolen.ok).toBe(false);
      if (stolen.ok) return;
      expect(stolen.error.code).toBe("forbidden");
      expect(stolen.error.message).toMatch(/not delivered to thief/);
      const entries = await logEntries(from);
      expect(entries.filter((e) => e.event["type"] === EventType.Message)).toEqual([]);
      const refusal = entries.find((e) => e.event["type"] === EventType.Rejected || e.event["type"] === EventType.Denied);
      expect(refusal?.event["actor"]).toBe("thief");
      expect(refusal?.event["error"]).toEqual(stolen.error);

      // Through the SDK the refusal is the same typed error.
      const thief = new SyscallClient(thiefNc, "thief", { retryForMs: 0 });
      const err = await thief
        .call(SyscallOp.Send, { id: syscallId("thief-sdk", 1), to: "target", body: "x", causation: job.event })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MaxwellError);
      expect((err as MaxwellError).code).toBe("forbidden");
    });
  });

  it("leaves a log whose hash chain verifies after every attempt above", async () => {
    const before = await lastSeq();
    const report = await verifyLog(h, kjs, kjsm);
    expect(report.problem).toBeUndefined();
    expect(report.ok).toBe(true);
    expect(report.lastSeq).toBeGreaterThanOrEqual(before);
  });
});

/**
 * A publish the server allows can carry any reply subject, and whoever answers it (the JetStream
 * API, with the account's authority, or the kernel, with its own) publishes there without the
 * requester's permissions being checked. These are the regression tests for that hole: an agent
 * aims an answer into the log, onto another actor's syscall subject or at another agent's
 * deliveries, and none of it may land. Each test gets its own deployment because a successful
 * attack leaves the log (append-only) damaged for good.
 */
describe("perimeter: answers aimed through reply subjects", () => {
  async function deployment() {
    const h = await startHarness();
    const mallory = await h.register("mallory");
    const victim = await h.register("victim", "agent", ["workers"]);
    await h.register("alice", "principal");
    const kernelNc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "test:kernel", reconnect: false });
    const jsm = await jetstreamManager(kernelNc);
    const js = jetstream(kernelNc);
    const connect = (name: string, creds: string) =>
      connectNats({ servers: h.url, creds: new TextEncoder().encode(creds), name: `test:${name}`, inboxPrefix: subjects.inboxPrefix(name), reconnect: false });
    const nc = await connect("mallory", mallory.creds);
    const violations = watchViolations(nc);
    // Victim listens on its own delivery subject, raw: anything aimed at it shows up here.
    const victimNc = await connect("victim", victim.creds);
    const atVictim = await watchDeliveries(victimNc, "victim");
    let barriers = 0;

    const d = {
      h,
      nc,
      js,
      jsm,
      violations,
      connect,
      /**
       * Waits until what mallory published so far has had its effect. Two syscalls of mallory's
       * own, one after the other's answer: whatever the kernel did with mallory's earlier input
       * (its answer, a log write, a syscall it received back) happened before the second one is
       * logged and answered. Then victim's own syscall fences victim's delivery subject: the
       * kernel published anything aimed there before it answered victim.
       */
      async barrier(): Promise<string | undefined> {
        try {
          for (let i = 0; i < 2; i++) {
            await nc.request(subjects.syscall("mallory", SyscallOp.Send), encode({ id: `barrier-${++barriers}:1`, to: "victim" }), { timeout: 10_000 });
          }
          await victimNc.request(subjects.syscall("victim", SyscallOp.Ack), encode({ ack: [] }), { timeout: 10_000 });
          return undefined;
        } catch (err) {
          return `the kernel stopped answering syscalls: ${(err as Error).message}`;
        }
      },
      async entries() {
        const out: Array<{ seq: number; subject: string; data: Uint8Array }> = [];
        for await (const e of readLog(js, jsm, { fromSeq: 1 })) out.push(e);
        return out;
      },
      /** The log holds only the kernel's own entries, none in victim's name or addressed to it. */
      async expectUndamaged(): Promise<void> {
        const entries = await d.entries();
        const shown = (e: { seq: number; subject: string; data: Uint8Array }) => `#${e.seq} ${e.subject}: ${new TextDecoder().decode(e.data).slice(0, 80)}`;
        const events = entries.map((e) => {
          try {
            return { entry: e, event: decodeMap(e.data) };
          } catch {
            return { entry: e, event: undefined };
          }
        });
        expect(events.filter((x) => x.event?.["seq"] !== x.entry.seq).map((x) => shown(x.entry)), "entries the kernel did not write").toEqual([]);
        expect(entries.filter((e) => e.subject === subjects.logInbox("victim")).map(shown), "entries addressed to victim").toEqual([]);
        expect(events.filter((x) => x.event?.["actor"] === "victim").map((x) => shown(x.entry)), "entries in victim's name").toEqual([]);
        const report = await verifyLog(h, js, jsm);
        expect(report.problem).toBeUndefined();
        expect(report.ok).toBe(true);
        for (const name of [consumers.inbox("victim"), consumers.replies("victim")]) {
          const info = await jsm.consumers.info(LOG_STREAM, name);
          expect({ consumer: name, pending: info.num_pending, ackPending: info.num_ack_pending }).toEqual({ consumer: name, pending: 0, ackPending: 0 });
        }
        expect(atVictim.got.map((x) => new TextDecoder().decode(x.data).slice(0, 80)), "deliveries to victim").toEqual([]);
      },
      async close() {
        await nc.close().catch(() => undefined);
        await victimNc.close().catch(() => undefined);
        await kernelNc.close().catch(() => undefined);
        // A kernel whose appender is wedged never finishes a graceful stop.
        await h.killKernel("SIGKILL");
        await h.close();
      },
    };
    return d;
  }

  it("refuses an agent credential writing into the log through the reply subject of a consumer-info request", async () => {
    const d = await deployment();
    try {
      const subject = subjects.consumerInfo(consumers.inbox("mallory"));
      d.nc.publish(subject, new Uint8Array(0), { reply: subjects.logInbox("victim") });
      expect((await d.violations.waitFor("Publish", subject)).message).toMatch(PERMISSIONS_VIOLATION);
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
    } finally {
      await d.close();
    }
  });

  it("refuses an agent credential re-delivering its own log events into another agent's inbox through the reply subject of a pull", async () => {
    const d = await deployment();
    try {
      const alice = await d.connect("alice2", (await d.h.register("alice2", "principal")).creds);
      const sent = await new SyscallClient(alice, "alice2", { retryForMs: 0 }).call(SyscallOp.Send, { id: syscallId("for-mallory", 1), to: "mallory", body: "for mallory's eyes only" });
      await alice.close();
      for (const consumer of [consumers.inbox("mallory"), consumers.replies("mallory")]) {
        const subject = subjects.consumerNext(consumer);
        d.nc.publish(subject, new TextEncoder().encode(JSON.stringify({ batch: 1, no_wait: true })), { reply: subjects.logInbox("victim") });
        expect((await d.violations.waitFor("Publish", subject)).message).toMatch(PERMISSIONS_VIOLATION);
      }
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
      // Mallory's message is still the kernel's to hand to mallory, not consumed by the pull.
      const inbox = await d.jsm.consumers.info(LOG_STREAM, consumers.inbox("mallory"));
      expect(inbox.num_pending + inbox.num_ack_pending).toBe(1);
      const stored = await d.jsm.streams.getMessage(LOG_STREAM, { seq: sent.seq });
      expect(stored?.subject).toBe(subjects.logInbox("mallory"));
    } finally {
      await d.close();
    }
  });

  it("refuses an agent credential making the kernel log a syscall in another agent's name through the reply subject of a JetStream request", async () => {
    const d = await deployment();
    try {
      const subject = subjects.consumerInfo(consumers.inbox("mallory"));
      d.nc.publish(subject, new Uint8Array(0), { reply: subjects.syscall("victim", SyscallOp.Send) });
      expect((await d.violations.waitFor("Publish", subject)).message).toMatch(PERMISSIONS_VIOLATION);
      d.nc.publish("$JS.API.INFO", new Uint8Array(0), { reply: subjects.syscall("victim", SyscallOp.Ack) });
      expect((await d.violations.waitFor("Publish", "$JS.API.INFO")).message).toMatch(PERMISSIONS_VIOLATION);
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
    } finally {
      await d.close();
    }
  });

  it.each([
    ["into the log", subjects.logInbox("victim")],
    ["onto another agent's syscall subject", subjects.syscall("victim", SyscallOp.Send)],
    ["onto another agent's delivery subject", subjects.delivery("victim")],
  ])("refuses an agent credential aiming the kernel's answers to its own syscalls %s through the reply subject (%s)", async (_what, target) => {
    const d = await deployment();
    try {
      // A syscall the kernel denies, an ack it applies, and an ack it rejects: each answered.
      d.nc.publish(subjects.syscall("mallory", SyscallOp.Send), encode({ id: "aimed:1", to: "victim", body: "x" }), { reply: target });
      d.nc.publish(subjects.syscall("mallory", SyscallOp.Ack), encode({ ack: [] }), { reply: target });
      d.nc.publish(subjects.syscall("mallory", SyscallOp.Ack), encode({ ack: "x" }), { reply: target });
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
      expect(d.violations.errors).toEqual([]);
    } finally {
      await d.close();
    }
  });

  it("refuses the admin credential any JetStream request, so it cannot aim a server response into the log", async () => {
    const d = await deployment();
    try {
      const admin = await connectNats({ servers: d.h.url, creds: d.h.layout.credsOf("admin"), name: "test:admin-aim", inboxPrefix: "_INBOX", reconnect: false });
      try {
        const subject = `$JS.API.STREAM.INFO.${LOG_STREAM}`;
        admin.publish(subject, new TextEncoder().encode("{}"), { reply: subjects.logInbox("victim") });
        await expect(admin.request(subject, new TextEncoder().encode("{}"), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);
      } finally {
        await admin.close();
      }
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
    } finally {
      await d.close();
    }
  });

  it("refuses the admin credential writing into the log through the reply subject of a kernel admin request (mx.admin.status)", async () => {
    const d = await deployment();
    try {
      const admin = await connectNats({ servers: d.h.url, creds: d.h.layout.credsOf("admin"), name: "test:admin-aim", inboxPrefix: "_INBOX", reconnect: false });
      try {
        admin.publish(subjects.admin(AdminOp.Status), encode({}), { reply: subjects.logInbox("victim") });
        // The same request, answered normally, comes back after the aimed one was handled.
        await admin.request(subjects.admin(AdminOp.Status), encode({}), { timeout: 5000 });
      } finally {
        await admin.close();
      }
      expect(await d.barrier()).toBeUndefined();
      await d.expectUndamaged();
    } finally {
      await d.close();
    }
  });
});
