/**
 * The perimeter, proved against a real nats-server: what an agent's, the admin's and the kernel's
 * credentials can and cannot do (promise 1, complete mediation; promise 4, the log is
 * append-only), and that identity cannot be forged (promise 2). Agents connect raw, as a process
 * in any language would, so nothing here relies on the SDK behaving.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ChainVerifier,
  EventType,
  LOG_STREAM,
  SyscallOp,
  consumers,
  decodeMap,
  encode,
  subjects,
  syscallId,
  type SyscallReply,
} from "../../src/protocol/mod.js";
import {
  connectNats,
  consumeDurable,
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
import { defineAgent, MaxwellError, type Message } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

const PERMISSIONS_VIOLATION = /Permissions Violation/i;

/** Verifies the whole log's hash chain and checkpoints with the kernel's public key. */
async function verifyLog(h: Harness, js: JetStreamClient, jsm: JetStreamManager) {
  const kernelKey = readFileSync(keyFiles(h.layout.keys).kernelPublic, "utf8").trim();
  const verifier = new ChainVerifier(kernelKey, verifySignature);
  for await (const e of readLog(js, jsm, { fromSeq: 1 })) verifier.add(e);
  return verifier.finish((await jsm.streams.info(LOG_STREAM)).state.last_seq);
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
      const inbox = await kjsm.consumers.info(LOG_STREAM, consumers.inbox("victim"));
      expect(inbox.num_pending).toBe(0);
      expect(inbox.delivered.stream_seq).toBe(0);
    });

    it("rejects a request an agent addresses to another agent's syscall subject", async () => {
      const nc = await connectAs("mallory");
      await expect(nc.request(subjects.syscall("victim", SyscallOp.Send), encode({ id: "forged:2", to: "victim" }), { timeout: 5000 })).rejects.toThrow(
        PERMISSIONS_VIOLATION,
      );
    });

    it.each([
      ["another agent's inbox", "mx.rep.victim.>"],
      ["the log", "mx.log.>"],
      ["another agent's deliveries in the log", "mx.log.in.victim"],
      ["its own deliveries in the log, bypassing its consumer", "mx.log.in.mallory"],
      ["other actors' syscalls", "mx.sys.>"],
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
      // the log before the kernel answers) and a message into victim's inbox, both published by
      // the kernel before the answer mallory waits for, so they would have arrived first.
      kernelNc.publish(`${subjects.inboxPrefix("victim")}.probe`, encode({ probe: true }));
      await kernelNc.flush();
      const fence = await syscall(nc, "mallory", SyscallOp.Send, { id: `sub-fence-${++fences}:1`, to: "victim", body: "x" });
      expect(fence.ok).toBe(false);
      expect(got).toEqual([]);
    });

    it("lets an agent read its own consumer's info (the control for the refusals below)", async () => {
      const nc = await connectAs("mallory");
      const m = await nc.request(subjects.consumerInfo(consumers.inbox("mallory")), new Uint8Array(0), { timeout: 5000 });
      const info = JSON.parse(new TextDecoder().decode(m.data)) as { name?: string; error?: unknown };
      expect(info.error).toBeUndefined();
      expect(info.name).toBe(consumers.inbox("mallory"));
    });

    it.each([
      ["pull from another agent's inbox consumer", subjects.consumerNext(consumers.inbox("victim")), { batch: 1, expires: 1_000_000_000 }],
      ["pull from another agent's replies consumer", subjects.consumerNext(consumers.replies("victim")), { batch: 1, expires: 1_000_000_000 }],
      ["read another agent's consumer info", subjects.consumerInfo(consumers.inbox("victim")), {}],
      ["create a consumer on the log", `$JS.API.CONSUMER.CREATE.${LOG_STREAM}`, { stream_name: LOG_STREAM, config: { ack_policy: "none" } }],
      ["delete another agent's consumer", `$JS.API.CONSUMER.DELETE.${LOG_STREAM}.${consumers.inbox("victim")}`, {}],
      ["delete the log stream", `$JS.API.STREAM.DELETE.${LOG_STREAM}`, {}],
      ["purge the log stream", `$JS.API.STREAM.PURGE.${LOG_STREAM}`, {}],
      ["delete a log entry", `$JS.API.STREAM.MSG.DELETE.${LOG_STREAM}`, { seq: 1 }],
      ["update the log stream", `$JS.API.STREAM.UPDATE.${LOG_STREAM}`, { name: LOG_STREAM, deny_delete: false, deny_purge: false }],
      ["read a log entry directly", `$JS.API.STREAM.MSG.GET.${LOG_STREAM}`, { seq: 1 }],
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
    it("refuses the admin credential deleting, purging, editing or reconfiguring the log stream", async () => {
      const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("admin"), name: "test:admin", reconnect: false });
      opened.push(nc);
      const jsm = await jetstreamManager(nc);
      const before = await jsm.streams.info(LOG_STREAM);
      expect(before.state.last_seq).toBeGreaterThan(0);

      await expect(jsm.streams.delete(LOG_STREAM)).rejects.toThrow(PERMISSIONS_VIOLATION);
      await expect(jsm.streams.purge(LOG_STREAM)).rejects.toThrow(PERMISSIONS_VIOLATION);
      await expect(jsm.streams.deleteMessage(LOG_STREAM, 1)).rejects.toThrow(PERMISSIONS_VIOLATION);
      await expect(jsm.streams.deleteMessage(LOG_STREAM, 1, true)).rejects.toThrow(PERMISSIONS_VIOLATION);
      await expect(jsm.streams.update(LOG_STREAM, { ...before.config, deny_delete: false, deny_purge: false })).rejects.toThrow(PERMISSIONS_VIOLATION);
      await expect(nc.request(subjects.logInbox("victim"), encode({ forged: true }), { timeout: 5000 })).rejects.toThrow(PERMISSIONS_VIOLATION);

      const after = await jsm.streams.info(LOG_STREAM);
      expect(after.config.deny_delete).toBe(true);
      expect(after.config.deny_purge).toBe(true);
      expect(after.state.first_seq).toBe(1);
      expect(after.state.messages).toBe(after.state.last_seq);
      expect(after.state.last_seq).toBeGreaterThanOrEqual(before.state.last_seq);
    });

    it("lets the admin credential read the whole log in order", async () => {
      const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("admin"), name: "test:admin-reader", reconnect: false });
      opened.push(nc);
      const jsm = await jetstreamManager(nc);
      const js = jetstream(nc);
      const end = (await jsm.streams.info(LOG_STREAM)).state.last_seq;
      const seqs: number[] = [];
      const types: unknown[] = [];
      for await (const e of readLog(js, jsm, { fromSeq: 1 })) {
        seqs.push(e.seq);
        types.push(decodeMap(e.data)["type"]);
      }
      expect(seqs[0]).toBe(1);
      expect(seqs.length).toBeGreaterThanOrEqual(end);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
      expect(types[0]).toBe(EventType.Genesis);
      expect(types).toContain(EventType.IdentityRegistered);
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

    it("accepts a causation as soon as its delivery can be pulled, even under pipelined load (the kernel knows every event it lets an agent read)", async () => {
      await register("dispatcher", "principal");
      await register("forwarder", "agent", ["coordinators"]);
      await register("sink", "agent", ["workers"]);
      const dispatcher = await connectAs("dispatcher");
      const forwarder = await connectAs("forwarder");
      const deliveries = await consumeDurable(forwarder, consumers.inbox("forwarder"));
      const rounds = 300;
      const outcomes: string[] = [];
      // The forwarder acts on each delivery the moment JetStream hands it over, citing it.
      const forwarding = (async () => {
        const answers: Promise<void>[] = [];
        let n = 0;
        for await (const m of deliveries) {
          const delivered = decodeMap(m.data);
          m.ack();
          const i = n;
          answers.push(
            syscall(forwarder, "forwarder", SyscallOp.Send, { id: `fwd-${i}:1`, to: "sink", body: i, causation: delivered["id"] }).then((r) =>
              void outcomes.push(r.ok ? "ok" : `${r.error.code}: ${r.error.message.replace(/[0-9A-HJKMNP-TV-Z]{26}/, "<id>")}`),
            ),
          );
          if (++n === rounds) break;
        }
        await Promise.all(answers);
      })();
      await Promise.all(Array.from({ length: rounds }, (_, i) => syscall(dispatcher, "dispatcher", SyscallOp.Send, { id: `job-${i}:1`, to: "forwarder", body: i })));
      await forwarding;
      await deliveries.close();
      const refused = outcomes.filter((o) => o !== "ok");
      expect(refused, `${refused.length} of ${rounds} citations of a delivered event were refused`).toEqual([]);
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
    const report = await verifyLog(h, kjs, kjsm);
    expect(report.problem).toBeUndefined();
    expect(report.ok).toBe(true);
    expect(report.lastSeq).toBe(await lastSeq());
  });
});

/**
 * A publish the server allows can carry any reply subject, and the JetStream API answers on it
 * with the account's authority, not the requester's. Each test gets its own deployment because
 * a successful attack leaves the log (append-only) damaged for good.
 */
describe("perimeter: reply subjects of an agent's allowed JetStream requests", () => {
  async function deployment() {
    const h = await startHarness();
    const mallory = await h.register("mallory");
    await h.register("victim", "agent", ["workers"]);
    await h.register("alice", "principal");
    const kernelNc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "test:kernel", reconnect: false });
    const jsm = await jetstreamManager(kernelNc);
    const js = jetstream(kernelNc);
    const nc = await connectNats({
      servers: h.url,
      creds: new TextEncoder().encode(mallory.creds),
      name: "test:mallory",
      inboxPrefix: subjects.inboxPrefix("mallory"),
      reconnect: false,
    });
    return {
      h,
      nc,
      js,
      jsm,
      /**
       * Waits until what mallory published so far has had its effect: an ordinary JetStream
       * request on the same connection is answered after the earlier one, and a syscall of
       * mallory's own is logged (through the same stream) after anything written before it.
       */
      async barrier(): Promise<string | undefined> {
        await nc.request(subjects.consumerInfo(consumers.inbox("mallory")), new Uint8Array(0), { timeout: 5000 });
        try {
          await nc.request(subjects.syscall("mallory", SyscallOp.Send), encode({ id: `barrier-${Date.now()}:1`, to: "victim" }), { timeout: 10_000 });
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
      async close() {
        await nc.close().catch(() => undefined);
        await kernelNc.close().catch(() => undefined);
        // A kernel whose appender is wedged never finishes a graceful stop.
        await h.killKernel("SIGKILL");
        await h.close();
      },
    };
  }

  it("refuses an agent credential writing into the log through the reply subject of its own consumer-info request", async () => {
    const d = await deployment();
    try {
      d.nc.publish(subjects.consumerInfo(consumers.inbox("mallory")), new Uint8Array(0), { reply: subjects.logInbox("victim") });
      const stuck = await d.barrier();
      const entries = await d.entries();
      expect(entries.filter((e) => e.subject === subjects.logInbox("victim")).map((e) => new TextDecoder().decode(e.data).slice(0, 80))).toEqual([]);
      const report = await verifyLog(d.h, d.js, d.jsm);
      expect(report.problem).toBeUndefined();
      expect((await d.jsm.consumers.info(LOG_STREAM, consumers.inbox("victim"))).num_pending).toBe(0);
      expect(stuck).toBeUndefined();
    } finally {
      await d.close();
    }
  });

  it("refuses an agent credential re-delivering its own log events into another agent's inbox through the reply subject of a pull", async () => {
    const d = await deployment();
    try {
      const aliceCreds = (await d.h.register("alice2", "principal")).creds;
      const aliceNc = await connectNats({ servers: d.h.url, creds: new TextEncoder().encode(aliceCreds), name: "test:alice2", inboxPrefix: subjects.inboxPrefix("alice2"), reconnect: false });
      await new SyscallClient(aliceNc, "alice2", { retryForMs: 0 }).call(SyscallOp.Send, { id: syscallId("for-mallory", 1), to: "mallory", body: "for mallory's eyes only" });
      await aliceNc.close();
      d.nc.publish(subjects.consumerNext(consumers.inbox("mallory")), new TextEncoder().encode(JSON.stringify({ batch: 1, no_wait: true })), {
        reply: subjects.logInbox("victim"),
      });
      const stuck = await d.barrier();
      const entries = await d.entries();
      expect(entries.filter((e) => e.subject === subjects.logInbox("victim")).map((e) => decodeMap(e.data)["body"])).toEqual([]);
      const report = await verifyLog(d.h, d.js, d.jsm);
      expect(report.problem).toBeUndefined();
      expect((await d.jsm.consumers.info(LOG_STREAM, consumers.inbox("victim"))).num_pending).toBe(0);
      expect(stuck).toBeUndefined();
    } finally {
      await d.close();
    }
  });

  it("refuses an agent credential making the kernel log a syscall in another agent's name through a reply subject", async () => {
    const d = await deployment();
    try {
      d.nc.publish(subjects.consumerInfo(consumers.inbox("mallory")), new Uint8Array(0), { reply: subjects.syscall("victim", SyscallOp.Send) });
      const stuck = await d.barrier();
      expect(stuck).toBeUndefined();
      const inVictimsName = (await d.entries()).map((e) => decodeMap(e.data)).filter((e) => e["actor"] === "victim");
      expect(inVictimsName).toEqual([]);
    } finally {
      await d.close();
    }
  });
});
