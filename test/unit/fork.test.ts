/**
 * The pure parts of `maxwell replay fork`: the verifier follows the kernel-key handover a fork
 * event makes (and nothing else), and the judgement of which deliveries were in flight at the cut.
 */
import { createServer, type KeyPair } from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { ChainVerifier, GENESIS_PREV, entryHash, type StoredEntry, type VerifyReport } from "../../src/protocol/chain.js";
import { encode } from "../../src/protocol/codec.js";
import { EventType, checkpointMessage, type LogEvent } from "../../src/protocol/events.js";
import { subjects } from "../../src/protocol/subjects.js";
import { inFlightAt } from "../../src/runtime/fork.js";
import { sign, verifySignature } from "../../src/transport/identity.js";

const parent = createServer();
const fork = createServer();
const intruder = createServer();

type Spec = { genesis: KeyPair } | { fork: { from: KeyPair; to: KeyPair } } | { checkpoint: KeyPair } | { message: string };

/** A correctly chained log, as the kernels would have written it. */
function chain(specs: Spec[]): StoredEntry[] {
  const out: StoredEntry[] = [];
  let prev = GENESIS_PREV;
  for (const [i, spec] of specs.entries()) {
    const seq = i + 1;
    const base = { v: 1, seq, prev, id: `ev-${seq}`, at: 1000 + seq };
    let subject: string;
    let event: Record<string, unknown>;
    if ("genesis" in spec) {
      subject = subjects.logKernel("genesis");
      event = { ...base, type: EventType.Genesis, kernelKey: spec.genesis.getPublicKey() };
    } else if ("fork" in spec) {
      subject = subjects.logKernel("fork");
      event = { ...base, type: EventType.Fork, upTo: seq - 1, parentKey: spec.fork.from.getPublicKey(), kernelKey: spec.fork.to.getPublicKey(), identities: {} };
    } else if ("checkpoint" in spec) {
      subject = subjects.logKernel("checkpoint");
      event = { ...base, type: EventType.Checkpoint, upTo: seq - 1, head: prev, key: spec.checkpoint.getPublicKey(), sig: sign(spec.checkpoint, checkpointMessage(seq - 1, prev)) };
    } else {
      subject = subjects.logInbox("worker");
      event = { ...base, type: EventType.Message, kind: "send", actor: "alice", principal: "alice", to: "worker", body: spec.message };
    }
    const data = encode(event);
    out.push({ seq, subject, data });
    prev = entryHash(subject, data);
  }
  return out;
}

function verify(entries: StoredEntry[], trusted: KeyPair): VerifyReport {
  const v = new ChainVerifier(trusted.getPublicKey(), verifySignature);
  for (const e of entries) v.add(e);
  return v.finish();
}

describe("ChainVerifier on a forked log", () => {
  const forked = (after: KeyPair = fork): StoredEntry[] =>
    chain([{ genesis: parent }, { message: "one" }, { checkpoint: parent }, { message: "two" }, { fork: { from: parent, to: fork } }, { message: "three" }, { checkpoint: after }]);

  it("accepts the parent's checkpoints before the fork and the fork's after it, trusting the fork's key", () => {
    const report = verify(forked(), fork);
    expect(report.problem).toBeUndefined();
    expect(report).toMatchObject({ ok: true, checkpoints: 2, checkpointedTo: 6 });
  });

  it("refuses a checkpoint after the fork signed by the parent's key", () => {
    const report = verify(forked(parent), fork);
    expect(report.problem).toEqual({ seq: 7, reason: `checkpoint signed by ${parent.getPublicKey()}, not the kernel key in effect ${fork.getPublicKey()}` });
  });

  it("does not let the parent's key vouch for what the fork wrote", () => {
    const report = verify(forked(), parent);
    expect(report.problem).toEqual({ seq: 7, reason: `checkpoint signed by ${fork.getPublicKey()}, not the kernel key ${parent.getPublicKey()}` });
  });

  it("refuses a fork event naming a parent key that is not the one in effect", () => {
    const entries = chain([{ genesis: parent }, { checkpoint: parent }, { fork: { from: intruder, to: fork } }, { checkpoint: fork }]);
    expect(verify(entries, fork).problem).toEqual({ seq: 3, reason: `fork names parent kernel key ${intruder.getPublicKey()}, but the key in effect is ${parent.getPublicKey()}` });
  });

  it("names the first untrusted checkpoint when no fork hands over to the trusted key", () => {
    const entries = chain([{ genesis: parent }, { message: "one" }, { checkpoint: parent }, { fork: { from: parent, to: intruder } }, { checkpoint: intruder }]);
    expect(verify(entries, fork).problem).toEqual({ seq: 3, reason: `checkpoint signed by ${parent.getPublicKey()}, not the kernel key ${fork.getPublicKey()}` });
  });
});

describe("inFlightAt", () => {
  let seq = 0;
  const at = (e: Record<string, unknown>): LogEvent => ({ v: 1, prev: "", at: 0, seq: ++seq, ...e }) as unknown as LogEvent;
  const caused = (actor: string, syscall: string) => ({ actor, principal: "alice", syscall, trace: "t", depth: 1 });

  it("redelivers what the log shows still being worked on after the cut, and nothing finished before it", () => {
    seq = 0;
    const events = [
      at({ type: EventType.IdentityRegistered, name: "w", kind: "agent", groups: ["workers"], publicKey: "U1" }),
      at({ type: EventType.IdentityRegistered, name: "h", kind: "agent", groups: [], publicKey: "U2" }),
      at({ id: "d1", type: EventType.Message, kind: "send", to: "w", ...caused("alice", "s:0") }), // 3: done before the cut
      at({ id: "e1", type: EventType.EffectStarted, ...caused("w", "d1:0") }),
      at({ id: "d2", type: EventType.Message, kind: "send", to: "w", ...caused("alice", "s:1") }), // 5: asks h, reply after the cut
      at({ id: "r1", type: EventType.Message, kind: "request", to: "h", ...caused("w", "d2:0") }), // 6: h answers after the cut
      at({ id: "d3", type: EventType.Message, kind: "send", to: "w", ...caused("alice", "s:2") }), // 7: its effect completes after
      at({ id: "e3", type: EventType.EffectStarted, ...caused("w", "d3:0") }),
      at({ id: "d4", type: EventType.Message, kind: "send", to: "w", ...caused("alice", "s:3") }), // 9: delivered at the cut
      // the cut: 9
      at({ id: "x1", type: EventType.Reply, to: "w", inReplyTo: "r1", ...caused("h", "r1:0") }),
      at({ id: "x2", type: EventType.EffectCompleted, effect: "e3", ...caused("w", "d3:0") }),
      at({ id: "x3", type: EventType.EffectStarted, ...caused("w", "d4:0") }),
      at({ id: "d5", type: EventType.Message, kind: "send", to: "w", ...caused("alice", "s:4") }),
    ];
    const flight = inFlightAt(events, 9);
    expect([...flight.redeliver].sort((a, b) => a - b)).toEqual([5, 6, 7, 9]);
    expect([...flight.agents.keys()]).toEqual(["w", "h"]);
    expect(flight.agents.get("w")).toEqual({ killed: false, groups: ["workers"] });
  });
});
