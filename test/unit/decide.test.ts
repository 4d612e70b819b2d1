/**
 * The kernel's decision as a pure function of (syscall, state, policy). State is built the way
 * the kernel builds it — initialState() folded with evolve() over stored events — and the
 * policy engine is the real one with the default policy set.
 */
import { readFileSync } from "node:fs";
import { beforeEach, describe, expect, it } from "vitest";
import {
  EVENT_VERSION,
  EventType,
  GENESIS_PREV,
  MaxwellError,
  SyscallOp,
  encode,
  entryHash,
  newEventId,
  newTraceId,
  parseLogEvent,
  parseSyscallRequest,
  subjects,
  type EventId,
  type LogEvent,
  type PendingEvent,
  type SyscallRequest,
  type TraceId,
} from "../../src/protocol/mod.js";
import { MAX_DEPTH, decideSyscall, timeoutReply, type Outcome } from "../../services/kernel/decide.js";
import { PolicyEngine } from "../../services/kernel/policy.js";
import { evolve, initialState, type KernelState } from "../../services/kernel/state.js";

const DEFAULTS = readFileSync(new URL("../../services/kernel/default-policies.cedar", import.meta.url), "utf8");
const NOW = 1_700_000_000_000;

/** The kernel's state as a fold over stored events, with the chain fields the appender adds. */
class Fold {
  readonly state: KernelState = initialState();
  private seq = 0;
  private prev = GENESIS_PREV;

  store(subject: string, pending: PendingEvent): LogEvent {
    this.seq += 1;
    const event = { ...pending, seq: this.seq, prev: this.prev } as LogEvent;
    const hash = entryHash(subject, encode(event));
    evolve(this.state, event, hash);
    this.prev = hash;
    return event;
  }

  register(name: string, kind: "agent" | "principal", groups: string[] = []): void {
    this.store(subjects.logIdentity(name), {
      v: EVENT_VERSION,
      id: newEventId(),
      at: NOW,
      type: EventType.IdentityRegistered,
      name,
      kind,
      groups,
      publicKey: `U${name.toUpperCase()}`,
    });
  }

  /** Stores what an outcome says to append, as the kernel would after a successful write. */
  commit(outcome: Outcome): LogEvent {
    if (outcome.kind !== "append") throw new Error(`expected an append, got ${outcome.kind}`);
    return this.store(outcome.subject, outcome.event);
  }
}

describe("decideSyscall", () => {
  let fold: Fold;
  let policy: PolicyEngine;

  function decide(actor: string, op: SyscallOp, request: Record<string, unknown>, extra: { headerTrace?: TraceId; validate?: boolean } = {}): Outcome {
    const parsed = extra.validate === false ? (request as unknown as SyscallRequest) : parseSyscallRequest(request);
    return decideSyscall(fold.state, policy, {
      actor,
      op,
      request: parsed,
      now: NOW,
      ...(extra.headerTrace ? { headerTrace: extra.headerTrace } : {}),
      newId: newEventId,
      newTrace: newTraceId,
    });
  }

  function thrown(f: () => unknown): MaxwellError {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(MaxwellError);
      return err as MaxwellError;
    }
    throw new Error("expected decideSyscall to throw");
  }

  function appended(outcome: Outcome): Extract<Outcome, { kind: "append" }> {
    expect(outcome.kind).toBe("append");
    if (outcome.kind !== "append") throw new Error("unreachable");
    expect(() => parseLogEvent({ ...outcome.event, seq: 1, prev: GENESIS_PREV })).not.toThrow();
    return outcome;
  }

  /** alice (principal) → coord: the first hop of every chain below. */
  function aliceSendsToCoord(): LogEvent & { type: "message" } {
    const e = fold.commit(decide("alice", SyscallOp.Send, { id: `alice-${newEventId()}:0`, to: "coord", body: "job" }));
    if (e.type !== EventType.Message) throw new Error("expected a message");
    return e;
  }

  beforeEach(() => {
    fold = new Fold();
    policy = new PolicyEngine();
    policy.load(DEFAULTS);
    fold.register("alice", "principal");
    fold.register("coord", "agent", ["coordinators"]);
    fold.register("worker", "agent", ["workers"]);
    fold.register("helper", "agent", ["workers"]);
    fold.register("loner", "agent");
  });

  describe("send and request", () => {
    it("denies a send no policy permits (default deny) and files the denial under the actor", () => {
      const out = appended(decide("loner", SyscallOp.Send, { id: "l:0", to: "worker", body: "hi" }));
      expect(out.subject).toBe(subjects.logDecision("loner"));
      expect(out.event).toMatchObject({
        type: EventType.Denied,
        actor: "loner",
        principal: "loner",
        op: "send",
        to: "worker",
        decision: { effect: "deny", policies: [] },
        error: { code: "forbidden", message: expect.stringMatching(/default deny/) },
      });
      const stored = fold.commit(out);
      expect(out.answer(stored)).toEqual({ ok: false, error: expect.objectContaining({ code: "forbidden" }) });
      // The refused request is kept whole, so replay can compare all of it.
      expect(out.event).toMatchObject({ request: { id: "l:0", to: "worker", body: "hi" } });
    });

    it("keeps a refused memory operation's request out of the denial: its value would be beyond erasure", () => {
      const out = appended(decide("coord", SyscallOp.Mem, { id: "cmem:0", to: "agent:coord", body: { op: "put", key: "k", value: "the vault combination" } }));
      expect(out.event).toMatchObject({ type: EventType.Denied, op: "mem", to: "agent:coord" });
      expect(out.event).not.toHaveProperty("request");
      expect(Buffer.from(encode(out.event)).toString("latin1")).not.toContain("vault combination");
    });

    it("delivers a principal's send to the target's inbox, stamped with the principal as itself at depth 0", () => {
      const out = appended(decide("alice", SyscallOp.Send, { id: "a:0", to: "coord", body: { task: 1 } }));
      expect(out.subject).toBe(subjects.logInbox("coord"));
      expect(out.event).toMatchObject({
        type: EventType.Message,
        kind: "send",
        actor: "alice",
        principal: "alice",
        to: "coord",
        depth: 0,
        body: { task: 1 },
        decision: { effect: "allow", policies: ["principals-send-work"] },
      });
      const stored = fold.commit(out);
      expect(out.answer(stored)).toMatchObject({ ok: true, result: { event: stored.id, seq: stored.seq } });
    });

    it("refuses a syscall from an actor that is not registered", () => {
      expect(thrown(() => decide("ghost", SyscallOp.Send, { id: "g:0", to: "coord" })).code).toBe("unauthorized");
    });

    it("answers a send to an unknown agent, or to a principal, with not_found", () => {
      for (const to of ["nobody", "alice"]) {
        const out = appended(decide("alice", SyscallOp.Send, { id: `nf-${to}:0`, to }));
        expect(out.event).toMatchObject({ type: EventType.Denied, error: { code: "not_found" }, decision: { policies: ["kernel:unknown-target"] } });
      }
    });

    it("refuses a request from a principal (principals send work; only agents wait for answers)", () => {
      expect(thrown(() => decide("alice", SyscallOp.Request, { id: "ar:0", to: "coord" })).code).toBe("bad_request");
    });

    it("refuses reply-only fields on a send and a send without a target", () => {
      expect(thrown(() => decide("alice", SyscallOp.Send, { id: "x:0", to: "coord", inReplyTo: newEventId() })).code).toBe("bad_request");
      expect(thrown(() => decide("alice", SyscallOp.Send, { id: "x:1" })).code).toBe("bad_request");
    });

    it("gives a request a deadline from its timeout", () => {
      const cause = aliceSendsToCoord();
      const out = appended(decide("coord", SyscallOp.Request, { id: "r:0", to: "worker", causation: cause.id, timeoutMs: 1234 }));
      expect(out.event).toMatchObject({ type: EventType.Message, kind: "request", deadline: NOW + 1234 });
    });
  });

  describe("causation and the principal", () => {
    it("refuses a causation that was delivered to a different actor", () => {
      const cause = aliceSendsToCoord();
      const e = thrown(() => decide("worker", SyscallOp.Send, { id: "w:0", to: "helper", causation: cause.id }));
      expect(e.code).toBe("forbidden");
      expect(e.message).toMatch(/not delivered to worker/);
    });

    it("refuses a causation the kernel never recorded", () => {
      expect(thrown(() => decide("coord", SyscallOp.Send, { id: "c:0", to: "worker", causation: newEventId() })).code).toBe("not_found");
    });

    it("inherits principal, trace and depth from the causing delivery, never from the payload or a header", () => {
      const cause = aliceSendsToCoord();
      const forgedTrace = newTraceId();
      const out = appended(
        decide(
          "coord",
          SyscallOp.Send,
          // As if a forged principal slipped past the schema: the decision must not read it.
          { id: "c:0", to: "worker", causation: cause.id, principal: "mallory", actor: "alice" },
          { headerTrace: forgedTrace, validate: false },
        ),
      );
      expect(out.event).toMatchObject({ type: EventType.Message, actor: "coord", principal: "alice", trace: cause.trace, depth: 1, causation: cause.id });
      expect(out.subject).toBe(subjects.logInbox("worker"));
    });

    it("stamps the actor itself as principal when nothing causes the syscall, whatever the payload says", () => {
      const out = appended(decide("coord", SyscallOp.Send, { id: "c:0", to: "worker", principal: "alice" }, { validate: false }));
      expect(out.event).toMatchObject({ actor: "coord", principal: "coord", depth: 0 });
    });

    it("uses the header trace only when nothing causes the syscall", () => {
      const trace = newTraceId();
      const out = appended(decide("alice", SyscallOp.Send, { id: "t:0", to: "coord" }, { headerTrace: trace }));
      expect(out.event).toMatchObject({ trace });
    });

    it("carries the principal across hops: alice → coord → worker → helper is denied for worker, still on alice's behalf", () => {
      const toCoord = aliceSendsToCoord();
      const toWorker = fold.commit(decide("coord", SyscallOp.Send, { id: "c:0", to: "worker", causation: toCoord.id }));
      const out = appended(decide("worker", SyscallOp.Send, { id: "w:0", to: "helper", causation: toWorker.id }));
      expect(out.event).toMatchObject({ type: EventType.Denied, actor: "worker", principal: "alice", depth: 2 });
    });
  });

  describe("replies", () => {
    function coordAsksWorker(): LogEvent {
      const cause = aliceSendsToCoord();
      return fold.commit(decide("coord", SyscallOp.Request, { id: `cr-${newEventId()}:0`, to: "worker", causation: cause.id, body: "q" }));
    }

    it("lets the addressee answer, to the requester, on the request's principal and trace", () => {
      const req = coordAsksWorker();
      if (req.type !== EventType.Message) throw new Error("expected a message");
      const out = appended(decide("worker", SyscallOp.Reply, { id: "wr:0", inReplyTo: req.id, body: "a" }));
      expect(out.subject).toBe(subjects.logReplies("coord"));
      expect(out.event).toMatchObject({
        type: EventType.Reply,
        actor: "worker",
        to: "coord",
        inReplyTo: req.id,
        principal: "alice",
        trace: req.trace,
        depth: req.depth + 1,
        body: "a",
        decision: { effect: "allow", policies: ["agents-reply", "principal:principals-allow-replies"] },
      });
    });

    it("denies a reply by anyone but the addressee, the requester included", () => {
      const req = coordAsksWorker();
      for (const actor of ["helper", "coord", "loner"]) {
        const out = appended(decide(actor, SyscallOp.Reply, { id: `${actor}-r:0`, inReplyTo: req.id, body: "mine" }));
        expect(out.subject).toBe(subjects.logDecision(actor));
        expect(out.event).toMatchObject({ type: EventType.Denied, error: { code: "forbidden" }, decision: { policies: ["kernel:not-addressee"] } });
      }
    });

    it("lets a request be answered only once", () => {
      const req = coordAsksWorker();
      fold.commit(decide("worker", SyscallOp.Reply, { id: "wr:0", inReplyTo: req.id, body: "first" }));
      const again = appended(decide("worker", SyscallOp.Reply, { id: "wr:1", inReplyTo: req.id, body: "second" }));
      expect(again.event).toMatchObject({ type: EventType.Denied, error: { code: "conflict", message: expect.stringMatching(/already answered/) } });
      expect(timeoutReply(fold.state, req.id as EventId, NOW + 10 ** 9, newEventId, policy.policySet.hash)).toBeUndefined();
    });

    it("does not let a request be answered after the kernel timed it out", () => {
      const req = coordAsksWorker();
      const t = timeoutReply(fold.state, req.id as EventId, NOW + 60_000, newEventId, policy.policySet.hash);
      expect(t?.event).toMatchObject({ type: EventType.Reply, actor: "kernel", to: "coord", principal: "alice", error: { code: "timeout" } });
      if (!t) return;
      fold.store(t.subject, t.event);
      const late = appended(decide("worker", SyscallOp.Reply, { id: "late:0", inReplyTo: req.id, body: "late" }));
      expect(late.event).toMatchObject({ type: EventType.Denied, error: { code: "conflict", message: expect.stringMatching(/timed out/) } });
    });

    it("answers a reply to an unknown request, or to a plain send, with not_found", () => {
      const send = aliceSendsToCoord();
      for (const inReplyTo of [newEventId(), send.id]) {
        const out = appended(decide("coord", SyscallOp.Reply, { id: `nf-${inReplyTo}:0`, inReplyTo }));
        expect(out.event).toMatchObject({ type: EventType.Denied, error: { code: "not_found" }, decision: { policies: ["kernel:unknown-request"] } });
      }
    });

    it("refuses a reply without inReplyTo or with a 'to'", () => {
      expect(thrown(() => decide("worker", SyscallOp.Reply, { id: "x:0" })).code).toBe("bad_request");
      const req = coordAsksWorker();
      expect(thrown(() => decide("worker", SyscallOp.Reply, { id: "x:1", inReplyTo: req.id, to: "loner" })).code).toBe("bad_request");
    });
  });

  describe("limits and repeats", () => {
    /** A delivery to coord at a given depth, as if it came down a long chain. */
    function deliveryToCoordAt(depth: number): EventId {
      const id = newEventId();
      fold.store(subjects.logInbox("coord"), {
        v: EVENT_VERSION,
        id,
        at: NOW,
        type: EventType.Message,
        kind: "send",
        actor: "alice",
        principal: "alice",
        syscall: `deep-${depth}:0` as SyscallRequest["id"],
        trace: newTraceId(),
        depth,
        to: "coord",
        body: null,
        decision: { effect: "allow", policies: ["principals-send-work"], policySet: policy.policySet.hash },
      });
      return id;
    }

    it(`refuses to go deeper than ${MAX_DEPTH} causal hops`, () => {
      const atLimit = appended(decide("coord", SyscallOp.Send, { id: "d:0", to: "worker", causation: deliveryToCoordAt(MAX_DEPTH - 1) }));
      expect(atLimit.event).toMatchObject({ type: EventType.Message, depth: MAX_DEPTH });
      const over = appended(decide("coord", SyscallOp.Send, { id: "d:1", to: "worker", causation: deliveryToCoordAt(MAX_DEPTH) }));
      expect(over.event).toMatchObject({
        type: EventType.Denied,
        depth: MAX_DEPTH + 1,
        error: { code: "budget_exceeded" },
        decision: { effect: "deny", policies: ["kernel:max-depth"] },
      });
    });

    it("answers a repeated syscall id from the log instead of acting twice", () => {
      const first = fold.commit(decide("alice", SyscallOp.Send, { id: "once:0", to: "coord", body: 1 }));
      const again = decide("alice", SyscallOp.Send, { id: "once:0", to: "coord", body: "different" });
      expect(again).toMatchObject({ kind: "repeat", reply: { ok: true, result: { event: first.id, seq: first.seq, repeated: true } } });
    });

    it("answers a repeated denied syscall with the same denial", () => {
      const denied = fold.commit(decide("loner", SyscallOp.Send, { id: "no:0", to: "worker" }));
      if (denied.type !== EventType.Denied) throw new Error("expected a denial");
      expect(decide("loner", SyscallOp.Send, { id: "no:0", to: "worker" })).toEqual({ kind: "repeat", reply: { ok: false, error: denied.error } });
    });

    it("keeps syscall ids per actor: the same id from another actor is a new syscall", () => {
      fold.commit(decide("alice", SyscallOp.Send, { id: "same:0", to: "coord" }));
      expect(decide("loner", SyscallOp.Send, { id: "same:0", to: "worker" }).kind).toBe("append");
    });

    it("denies everything when the policy cannot be evaluated", () => {
      policy.load(`${DEFAULTS}
@id("overflow-guard")
forbid (principal, action, resource) when { context.depth * 9223372036854775807 < 0 };
`);
      const cause = aliceSendsToCoord();
      const toWorker = fold.commit(decide("coord", SyscallOp.Send, { id: "ow:0", to: "worker", causation: cause.id }));
      expect(toWorker.type).toBe(EventType.Message); // depth 1: 1 * max does not overflow, and is not < 0
      const req = fold.commit(decide("coord", SyscallOp.Request, { id: "ow:1", to: "worker", causation: cause.id }));
      const out = appended(decide("worker", SyscallOp.Reply, { id: "ow:2", inReplyTo: req.id, body: "x" })); // depth 2: overflows
      expect(out.event).toMatchObject({
        type: EventType.Denied,
        error: { code: "forbidden", message: expect.stringMatching(/policy evaluation failed.*errors deny/) },
        decision: { effect: "deny", policies: ["overflow-guard"] },
      });
    });
  });

  describe("authority: the actor's grants intersected with the principal's", () => {
    const NO_BOB_REQUESTS = `${DEFAULTS}
@id("bob-may-not-request-workers")
forbid (principal == Maxwell::Principal::"bob", action == Maxwell::Action::"message.request", resource in Maxwell::Group::"workers");
`;

    it("denies an agent acting for a principal what the principal may not do, though the agent may", () => {
      policy.load(NO_BOB_REQUESTS);
      fold.register("bob", "principal");
      const forBob = fold.commit(decide("bob", SyscallOp.Send, { id: "bob-1:0", to: "coord", body: "job" }));
      const out = appended(decide("coord", SyscallOp.Request, { id: `${forBob.id}:0`, to: "worker", causation: forBob.id }));
      expect(out.subject).toBe(subjects.logDecision("coord"));
      expect(out.event).toMatchObject({ type: EventType.Denied, principal: "bob", decision: { effect: "deny" }, error: { code: "forbidden" } });
      const denied = out.event as { error: { message: string }; decision: { policies: string[] } };
      expect(denied.error.message).toMatch(/acts for principal 'bob', who may not message.request worker/);
      expect(denied.decision.policies).toContain("principal:bob-may-not-request-workers");
    });

    it("allows the same action for a principal who may, naming both halves of the decision", () => {
      policy.load(NO_BOB_REQUESTS);
      const job = aliceSendsToCoord();
      const out = appended(decide("coord", SyscallOp.Request, { id: `${job.id}:0`, to: "worker", causation: job.id }));
      expect(out.subject).toBe(subjects.logInbox("worker"));
      expect((out.event as { decision: { policies: string[] } }).decision.policies).toEqual(["coordinators-to-workers", "principal:principals-send-work"]);
    });

    it("asks once when an agent acts on its own authority", () => {
      const out = appended(decide("coord", SyscallOp.Send, { id: "own:0", to: "worker" }));
      expect((out.event as { principal: string; decision: { policies: string[] } }).principal).toBe("coord");
      expect((out.event as { decision: { policies: string[] } }).decision.policies).toEqual(["coordinators-to-workers"]);
    });
  });

  describe("delegation: a scope only narrows", () => {
    /** coord asks worker with a scope; returns the request event the worker then acts under. */
    function delegate(scope: Record<string, unknown>): LogEvent {
      policy.load(`${DEFAULTS}
@id("workers-to-workers")
permit (principal in Maxwell::Group::"workers", action in [Maxwell::Action::"message.send", Maxwell::Action::"message.request"], resource in Maxwell::Group::"workers");
`);
      const job = aliceSendsToCoord();
      return fold.commit(decide("coord", SyscallOp.Request, { id: `${job.id}:0`, to: "worker", causation: job.id, scope }));
    }

    it("records the scope with the delivery and lets the recipient act within it", () => {
      const req = delegate({ actions: ["message.send"] });
      expect(req).toMatchObject({ type: EventType.Message, scope: { actions: ["message.send"] } });
      const out = appended(decide("worker", SyscallOp.Send, { id: `${req.id}:0`, to: "helper", causation: req.id }));
      expect(out.subject).toBe(subjects.logInbox("helper"));
      // The scope travels on: helper may do no more than worker could.
      expect(out.event).toMatchObject({ scope: { actions: ["message.send"] } });
    });

    it("denies the recipient an action outside the delegated scope, though policy would allow it", () => {
      const req = delegate({ actions: ["message.send"] });
      const out = appended(decide("worker", SyscallOp.Request, { id: `${req.id}:0`, to: "helper", causation: req.id }));
      expect(out.event).toMatchObject({ type: EventType.Denied, decision: { policies: ["kernel:scope"] }, error: { code: "forbidden" } });
      expect((out.event as { error: { message: string } }).error.message).toMatch(/message.request is outside the scope delegated/);
    });

    it("denies and logs a delegation that would widen the scope: more actions, or a later expiry", () => {
      const req = delegate({ actions: ["message.send"], expiresAt: NOW + 1000 });
      const wider = appended(decide("worker", SyscallOp.Send, { id: `${req.id}:0`, to: "helper", causation: req.id, scope: { actions: ["message.send", "message.request"] } }));
      expect(wider.event).toMatchObject({ type: EventType.Denied, decision: { policies: ["kernel:scope-widening"] } });
      expect((wider.event as { error: { message: string } }).error.message).toMatch(/cannot delegate message.request: it would widen/);
      const later = appended(decide("worker", SyscallOp.Send, { id: `${req.id}:1`, to: "helper", causation: req.id, scope: { expiresAt: NOW + 5000 } }));
      expect(later.event).toMatchObject({ type: EventType.Denied, decision: { policies: ["kernel:scope-widening"] } });
      const narrower = appended(decide("worker", SyscallOp.Send, { id: `${req.id}:2`, to: "helper", causation: req.id, scope: { actions: [], expiresAt: NOW + 500 } }));
      expect(narrower.event).toMatchObject({ type: EventType.Message, scope: { actions: [], expiresAt: NOW + 500 } });
    });

    it("keeps a delegation cycle from widening: the scope can only shrink around the loop, and the loop ends", () => {
      // coord → worker → helper → worker → ... each hop hands on the scope it got (or less).
      const first = delegate({ actions: ["message.send"], expiresAt: NOW + 60_000 });
      let cause = first as LogEvent & { type: "message" };
      let holder = "worker";
      for (let hop = 0; hop < 6; hop++) {
        const next = holder === "worker" ? "helper" : "worker";
        const back = fold.commit(decide(holder, SyscallOp.Send, { id: `${cause.id}:0`, to: next, causation: cause.id }));
        expect(back).toMatchObject({ type: EventType.Message, scope: { actions: ["message.send"], expiresAt: NOW + 60_000 } });
        // Asking for more on the way round is refused at every hop.
        const wider = appended(decide(next, SyscallOp.Send, { id: `${back.id}:9`, to: holder, causation: back.id, scope: { actions: ["message.send", "message.request"] } }));
        expect(wider.event).toMatchObject({ type: EventType.Denied, decision: { policies: ["kernel:scope-widening"] } });
        cause = back as LogEvent & { type: "message" };
        holder = next;
      }
      // Narrowing to nothing ends it: the next hop may do nothing at all.
      const last = fold.commit(decide(holder, SyscallOp.Send, { id: `${cause.id}:0`, to: holder === "worker" ? "helper" : "worker", causation: cause.id, scope: { actions: [] } }));
      const stopped = appended(decide(holder === "worker" ? "helper" : "worker", SyscallOp.Send, { id: `${last.id}:0`, to: holder, causation: last.id }));
      expect(stopped.event).toMatchObject({ type: EventType.Denied, decision: { policies: ["kernel:scope"] } });
    });

    it("denies everything for the work once its scope has expired, but the request can still be answered", () => {
      const req = delegate({ expiresAt: NOW - 1 });
      const out = appended(decide("worker", SyscallOp.Send, { id: `${req.id}:0`, to: "helper", causation: req.id }));
      expect((out.event as { error: { message: string } }).error.message).toMatch(/expired/);
      const answer = appended(decide("worker", SyscallOp.Reply, { id: `${req.id}:1`, inReplyTo: req.id, causation: req.id, body: "done" }));
      expect(answer.subject).toBe(subjects.logReplies("coord"));
    });
  });
});
