/**
 * Audit and export bundles on a constructed log: the causal tree of a trace (every event of it,
 * nothing of another trace, each under its cause), what it cost, the checkpoints that sign it,
 * principal and agent summaries, the HTML report, and bundles that verify only when untouched.
 */
import { Buffer } from "node:buffer";
import { createServer, type KeyPair } from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { ErrorCode, EventType, GENESIS_PREV, MaxwellError, checkpointMessage, decodeMap, encode, entryHash, subjects, type LogEvent, type StoredEntry } from "../../src/protocol/mod.js";
import { ActivityFold, TraceCollector, auditTrace, escapeHtml, formatSummary, formatTrace, parseSince, renderTraceHtml, walk, type TraceAudit } from "../../src/runtime/audit.js";
import { BundleVerifier, BundleWriter, type BundleReport } from "../../src/runtime/bundle.js";
import { sign, verifySignature } from "../../src/transport/identity.js";

const kernel = createServer();
const intruder = createServer();
const T = "a".repeat(31) + "1";
const U = "a".repeat(31) + "2";
const SET = "f".repeat(64);
const allow = (...policies: string[]) => ({ effect: "allow" as const, policies, policySet: SET });

type Fields = Record<string, unknown>;
type Spec = Fields | { checkpoint: { signer?: KeyPair; head?: string } };

/** Builds a chained, signed log the way the kernel's appender would. */
function buildLog(specs: Spec[]): StoredEntry[] {
  const out: StoredEntry[] = [];
  let prev = GENESIS_PREV;
  specs.forEach((spec, i) => {
    const seq = i + 1;
    let event: Fields;
    let subject = "mx.log.test";
    if ("checkpoint" in spec) {
      const signer = (spec.checkpoint as { signer?: KeyPair }).signer ?? kernel;
      const head = (spec.checkpoint as { head?: string }).head ?? prev;
      subject = subjects.logKernel("checkpoint");
      event = { v: 1, seq, prev, id: `cp${seq}`, at: 1_000_000 + seq * 10, type: EventType.Checkpoint, upTo: seq - 1, head, key: signer.getPublicKey(), sig: sign(signer, checkpointMessage(seq - 1, head)) };
    } else {
      event = { v: 1, seq, prev, at: 1_000_000 + seq * 10, ...spec };
    }
    const data = encode(event);
    out.push({ seq, subject, data });
    prev = entryHash(subject, data);
  });
  return out;
}

const caused = (id: string, actor: string, principal: string, trace: string, syscall: string, causation?: string): Fields => ({
  id,
  actor,
  principal,
  trace,
  syscall,
  depth: causation ? 1 : 0,
  ...(causation ? { causation } : {}),
});

/** Trace T: alice → coord; coord asks worker, who calls a model and replies; coord is denied a send to rogue, holds a destructive tool call that carol approves; a last message after the last checkpoint. Trace U interleaves. */
const SPECS: Spec[] = [
  /* 1 */ { id: "g", type: EventType.Genesis, kernelKey: kernel.getPublicKey() },
  /* 2 */ { id: "p", type: EventType.PolicyLoaded, policySet: SET, policies: ["x"] },
  /* 3 */ { ...caused("m1", "alice", "alice", T, "s:0"), type: EventType.Message, kind: "send", to: "coord", body: { task: "<script>alert(1)</script>" }, decision: allow("principals-send-work") },
  /* 4 */ { ...caused("r1", "coord", "alice", T, "m1:0", "m1"), type: EventType.Message, kind: "request", to: "worker", body: { items: ["a"] }, decision: allow("coordinators-to-workers") },
  /* 5 */ { ...caused("e1", "worker", "alice", T, "r1:0", "r1"), type: EventType.EffectStarted, kind: "llm", op: "complete", target: "maxwell-offline", args: {}, decision: allow("agents-use-models"), labels: [] },
  /* 6 */ { ...caused("c1", "worker", "alice", T, "r1:0", "r1"), type: EventType.EffectCompleted, effect: "e1", kind: "llm", op: "complete", target: "maxwell-offline", result: "A", labels: [], usage: { model: "maxwell-offline", inputTokens: 100, outputTokens: 20 }, spent: { tokens: 120, microUsd: 300 } },
  /* 7 */ { ...caused("u1", "bob", "bob", U, "s:0"), type: EventType.Message, kind: "send", to: "coord", body: "other work", decision: allow("principals-send-work") },
  /* 8 */ { checkpoint: {} },
  /* 9 */ { ...caused("y1", "worker", "alice", T, "r1:1", "r1"), type: EventType.Reply, to: "coord", inReplyTo: "r1", body: ["A"], decision: allow("agents-reply") },
  /* 10 */ { ...caused("d1", "coord", "alice", T, "m1:1", "m1"), type: EventType.Denied, op: "send", to: "rogue", decision: { effect: "deny", policies: [], policySet: SET }, error: { code: ErrorCode.Forbidden, message: "no policy permits it" } },
  /* 11 */ { ...caused("h1", "coord", "alice", T, "m1:2", "m1"), type: EventType.ApprovalRequested, op: "tool", request: { id: "m1:2", to: "db-drop", body: { table: "prod" } }, digest: "d", reason: "destructive tool call", decision: allow("hold-destructive"), labels: [], expiresAt: 2_000_000 },
  /* 12 */ { ...caused("h2", "coord", "bob", U, "u1:0", "u1"), type: EventType.ApprovalRequested, op: "tool", request: { id: "u1:0", to: "db-drop", body: {} }, digest: "d2", reason: "destructive tool call", decision: allow("hold-destructive"), labels: [], expiresAt: 2_000_000 },
  /* 13 */ { id: "a1", type: EventType.ApprovalDecided, approval: "h1", verdict: "approve", by: "carol", reason: "planned" },
  /* 14 */ { id: "a2", type: EventType.ApprovalDecided, approval: "h2", verdict: "deny", by: "kernel" },
  /* 15 */ { ...caused("e2", "coord", "alice", T, "m1:2", "m1"), type: EventType.EffectStarted, kind: "tool", op: "call", target: "db-drop", args: { table: "prod" }, decision: allow("hold-destructive"), labels: [], approval: "h1" },
  /* 16 */ { ...caused("c2", "coord", "alice", T, "m1:2", "m1"), type: EventType.EffectCompleted, effect: "e2", kind: "tool", op: "call", target: "db-drop", result: { dropped: "prod" }, labels: [], spent: { toolCalls: 1 } },
  /* 17 */ { checkpoint: {} },
  /* 18 */ { ...caused("m2", "coord", "alice", T, "m1:3", "m1"), type: EventType.Message, kind: "send", to: "worker", body: "done", decision: allow("coordinators-to-workers") },
];

const LOG = buildLog(SPECS);
const EVENTS = LOG.map((e) => decodeMap(e.data) as unknown as LogEvent);

function audit(trace = T, log = LOG): TraceAudit {
  const c = new TraceCollector(trace, verifySignature);
  for (const e of log) c.add(e);
  return auditTrace(c.result());
}

const shape = (a: TraceAudit): unknown => {
  const tree = (nodes: TraceAudit["roots"]): unknown[] => nodes.map((n) => ({ [n.event.id]: n.link, ...(n.children.length ? { under: tree(n.children) } : {}) }));
  return tree(a.roots);
};

describe("audit trace", () => {
  it("includes every event of the trace and the decisions on its holds, and nothing of another trace", () => {
    const a = audit();
    const seqs = [...walk(a.roots)].map((n) => n.event.seq).sort((x, y) => x - y);
    expect(seqs).toEqual([3, 4, 5, 6, 9, 10, 11, 13, 15, 16, 18]);
    expect(a.events).toBe(11);
    const other = audit(U);
    expect([...walk(other.roots)].map((n) => n.event.seq).sort((x, y) => x - y)).toEqual([7, 12, 14]);
  });

  it("hangs each event under its cause: deliveries, replies under requests, outcomes under effects, decisions under holds, released actions under decisions", () => {
    expect(shape(audit())).toEqual([
      {
        m1: "root",
        under: [
          { r1: "causation", under: [{ e1: "causation", under: [{ c1: "outcome" }] }, { y1: "reply" }] },
          { d1: "causation" },
          { h1: "causation", under: [{ a1: "decision", under: [{ e2: "released", under: [{ c2: "outcome" }] }] }] },
          { m2: "causation" },
        ],
      },
    ]);
  });

  it("says who asked, which agents took part, which policy sets decided, and what it cost", () => {
    const a = audit();
    expect(a.principal).toBe("alice");
    expect(a.agents).toEqual(["coord", "worker", "rogue"]);
    expect(a.policySets).toEqual([SET]);
    expect(a.tally.messages).toEqual({ send: 2, request: 1 });
    expect(a.tally.replies).toEqual({ ok: 1, error: 0 });
    expect(a.tally.denials).toEqual({ forbidden: 1 });
    expect(a.tally.holds).toEqual({ requested: 1, approved: 1, refused: 0, expired: 0, pending: 0 });
    expect(a.tally.models).toMatchObject({ calls: 1, inputTokens: 100, outputTokens: 20, microUsd: 300 });
    expect(a.tally.tools).toEqual({ "db-drop": { started: 1, ok: 1, errors: {}, denied: 0, held: 1 } });
    expect(a.start).toBe(EVENTS[2]?.at);
    expect(a.end).toBe(EVENTS[17]?.at);
  });

  it("names the first checkpoint covering each event, whether it verifies against the genesis key, and what is not signed yet", () => {
    const a = audit();
    const cp = new Map([...walk(a.roots)].map((n) => [n.event.seq, n.checkpoint]));
    expect([3, 4, 5, 6].map((s) => cp.get(s))).toEqual([8, 8, 8, 8]);
    expect([9, 10, 11, 13, 15, 16].map((s) => cp.get(s))).toEqual([17, 17, 17, 17, 17, 17]);
    expect(cp.get(18)).toBeUndefined();
    expect(a.unsigned).toEqual([18]);
    expect(a.checkpoints.map((c) => [c.seq, c.upTo, c.verified, c.headMatches])).toEqual([
      [8, 7, true, true],
      [17, 16, true, true],
    ]);
  });

  it("reports a checkpoint signed by another key, or over a head that is not the stored entry's, as not verified", () => {
    const forged = buildLog(SPECS.map((s, i) => (i === 7 ? { checkpoint: { signer: intruder } } : i === 16 ? { checkpoint: { head: "0".repeat(64) } } : s)));
    const a = audit(T, forged);
    const [first, second] = a.checkpoints;
    expect(first).toMatchObject({ seq: 8, genesisKey: false, signatureValid: true, verified: false });
    expect(second).toMatchObject({ seq: 17, genesisKey: true, signatureValid: true, headMatches: false, verified: false });
    const text = formatTrace(a);
    expect(text).toMatch(/#8 signs .*NOT VERIFIED: it is signed by/);
    expect(text).toMatch(/#17 signs .*NOT VERIFIED: its head is not the hash of the stored entry #16/);
  });

  it("accepts a unique prefix of the trace id, and refuses an ambiguous or unknown one", () => {
    expect(audit(T.slice(0, 32)).trace).toBe(T);
    expect(() => audit("aaaa")).toThrow(/matches 2 traces/);
    expect(() => audit("bbbb")).toThrow(MaxwellError);
    expect(() => audit("bbbb")).toThrow(/no event of trace bbbb/);
  });

  it("leaves out events of other traces even when they are handed to it", () => {
    const a = auditTrace({ trace: T, events: EVENTS, checkpoints: [], undecodable: [] });
    expect([...walk(a.roots)].every((n) => ("trace" in n.event ? n.event.trace === T : n.event.id === "a1"))).toBe(true);
    expect(a.events).toBe(11);
  });

  it("prints an indented tree with times, decisions with policy ids and set, costs and the checkpoints", () => {
    const text = formatTrace(audit());
    expect(text).toContain(`trace ${T}`);
    expect(text).toMatch(/asked by alice at .*11 events/);
    expect(text).toMatch(/^└─ #3 \d\d:\d\d:\d\d\.\d{3} \+0\.000s {2}send alice → coord {2}allow \[principals-send-work\] set ffffffffffff/m);
    expect(text).toMatch(/^ {3}├─ #4 .*request coord → worker/m);
    expect(text).toMatch(/^ {3}│ {2}├─ #5 .*model worker → maxwell-offline complete/m);
    expect(text).toMatch(/^ {3}│ {2}│ {2}└─ #6 .*answer maxwell-offline → worker {2}ok A {2}100\+20 tokens \(maxwell-offline\) {2}\$0\.000300/m);
    expect(text).toMatch(/#10 .*DENIED coord send → rogue {2}forbidden: no policy permits it {2}deny \[default deny\]/);
    expect(text).toMatch(/#11 .*HELD coord tool → db-drop: destructive tool call {2}approval h1/);
    expect(text).toMatch(/#13 .*APPROVED by carol: planned/);
    expect(text).toMatch(/#15 .*tool coord → db-drop call .*released by approval h1.*\(released\)/);
    expect(text).toMatch(/model calls 1: 100 in \+ 20 out tokens, \$0\.000300/);
    expect(text).toMatch(/db-drop: 1 started \(1 ok, 1 held\)/);
    expect(text).toMatch(/#8 signs #1\.\.#7 .*covering 4 events of this trace \(#3\.\.#6\): signature verifies against the genesis kernel key/);
    expect(text).toMatch(/1 events \(#18\.\.#18\) are not yet covered by a signed checkpoint/);
    expect(text).not.toMatch(/─ #(7|12|14) /);
    expect(text).not.toMatch(/u1|h2|bob/);
  });
});

describe("audit HTML report", () => {
  const html = renderTraceHtml(audit(), 2_000_000);

  it("shows every event of the trace, by id, and none of another trace", () => {
    for (const id of ["m1", "r1", "e1", "c1", "y1", "d1", "h1", "a1", "e2", "c2", "m2"]) expect(html).toContain(`id="ev-${id}"`);
    for (const id of ["u1", "h2", "a2"]) expect(html).not.toContain(`ev-${id}`);
  });

  it("is self-contained and inert: no scripts, no external assets, and event text is escaped", () => {
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain("<svg");
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
    expect(html).not.toMatch(/<link /i);
    expect(html).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
    expect(escapeHtml(`<a href="x">'&`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
  });

  it("marks each event with the checkpoint that signs it", () => {
    expect(html).toMatch(/id="ev-m1".*?✓ checkpoint #8/s);
    expect(html).toMatch(/id="ev-m2".*?unsigned/s);
  });
});

describe("audit summaries", () => {
  const fold = (subject: ConstructorParameters<typeof ActivityFold>[0], since?: ReturnType<typeof parseSince>) => {
    const f = new ActivityFold(subject, since);
    for (const e of EVENTS) f.add(e);
    return f.result();
  };

  it("summarizes what was done on a principal's behalf", () => {
    const s = fold({ kind: "principal", name: "alice" });
    expect(s.traces).toEqual([T]);
    expect(s.counterparts).toEqual(["coord", "worker"]);
    expect(s.tally.messages).toEqual({ send: 2, request: 1 });
    expect(s.tally.denials).toEqual({ forbidden: 1 });
    expect(s.tally.holds).toMatchObject({ requested: 1, approved: 1 });
    expect(s.tally.models).toMatchObject({ calls: 1, inputTokens: 100, outputTokens: 20, microUsd: 300 });
    expect(s.tally.tools["db-drop"]).toEqual({ started: 1, ok: 1, errors: {}, denied: 0, held: 1 });
    expect(s.tally.events).toBe(11);
    expect(formatSummary(s)).toMatch(/principal alice: 11 events/);
  });

  it("summarizes what an agent did and received, across traces", () => {
    const s = fold({ kind: "agent", name: "coord" });
    expect(s.traces).toEqual([T, U]);
    expect(s.counterparts).toEqual(["alice", "bob"]);
    expect(s.received).toEqual({ send: 2, request: 0, reply: 1 });
    expect(s.tally.messages).toEqual({ send: 1, request: 1 });
    expect(s.tally.holds).toEqual({ requested: 2, approved: 1, refused: 0, expired: 1, pending: 0 });
    expect(s.tally.models.calls).toBe(0);
    const worker = fold({ kind: "agent", name: "worker" });
    expect(worker.tally.models).toMatchObject({ calls: 1, microUsd: 300 });
    expect(worker.received).toEqual({ send: 1, request: 1, reply: 0 });
  });

  it("counts a principal's decisions as an approver", () => {
    const s = fold({ kind: "principal", name: "carol" });
    expect(s.decided).toEqual({ approved: 1, refused: 0 });
    expect(s.traces).toEqual([]);
  });

  it("starts at --since, a sequence or a time, and still links decisions to earlier holds", () => {
    expect(parseSince("12")).toEqual({ seq: 12 });
    expect(parseSince("1970-01-01T00:16:40.130Z")).toEqual({ at: 1_000_130 });
    expect(() => parseSince("yesterday")).toThrow(/--since must be/);
    const s = fold({ kind: "principal", name: "alice" }, { seq: 12 });
    expect(s.tally.holds).toMatchObject({ requested: 0, approved: 1 });
    expect(s.tally.messages).toEqual({ send: 1, request: 0 });
    const byTime = fold({ kind: "principal", name: "alice" }, parseSince(new Date(EVENTS[14]?.at ?? 0).toISOString()));
    expect(byTime.tally.events).toBe(3);
  });
});

describe("log export bundles", () => {
  function exportLines(log: StoredEntry[], from: number, to: number): string[] {
    const w = new BundleWriter({ from, to }, kernel.getPublicKey(), 0);
    const lines: string[] = [];
    for (const e of log.filter((x) => x.seq >= w.start)) {
      lines.push(...w.add(e));
      if (w.sealed) break;
    }
    expect(w.sealed).toBe(true);
    return lines;
  }
  function check(lines: string[], key?: string): BundleReport {
    const v = new BundleVerifier(verifySignature, key);
    for (const l of lines) v.addLine(l);
    return v.finish();
  }
  const editEntry = (lines: string[], seq: number, edit: (data: Buffer) => Buffer | Uint8Array): string[] =>
    lines.map((l) => {
      const o = JSON.parse(l) as { seq?: number; data?: string };
      if (o.seq !== seq || o.data === undefined) return l;
      return JSON.stringify({ ...o, data: Buffer.from(edit(Buffer.from(o.data, "base64"))).toString("base64") });
    });

  it("holds the range, the anchor hash before it, and the entries up to the checkpoint that covers it", () => {
    const lines = exportLines(LOG, 9, 12);
    const header = JSON.parse(lines[0] as string) as Record<string, unknown>;
    expect(header).toMatchObject({ format: "maxwell-log-bundle", version: 1, from: 9, to: 12, kernelKey: kernel.getPublicKey(), anchor: { seq: 8, hash: entryHash((LOG[7] as StoredEntry).subject, (LOG[7] as StoredEntry).data) } });
    const entries = lines.slice(1).map((l) => JSON.parse(l) as { seq: number; seal?: boolean });
    expect(entries.map((e) => e.seq)).toEqual([9, 10, 11, 12, 13, 14, 15, 16, 17]);
    expect(entries.filter((e) => e.seal).map((e) => e.seq)).toEqual([13, 14, 15, 16, 17]);
    const report = check(lines);
    expect(report).toMatchObject({ ok: true, from: 9, to: 12, checkpoints: 1, checkpointedTo: 16, sealEntries: 5, keyPinned: false });
    expect(check(lines, kernel.getPublicKey())).toMatchObject({ ok: true, keyPinned: true });
    expect(check(exportLines(LOG, 1, 7))).toMatchObject({ ok: true, lastSeq: 8, sealEntries: 1 });
  });

  it("needs no seal when the range ends with the checkpoint that signs it (a log after a clean stop)", () => {
    const lines = exportLines(LOG, 3, 8);
    expect(lines.slice(1).map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([3, 4, 5, 6, 7, 8]);
    expect(check(lines)).toMatchObject({ ok: true, sealEntries: 0, checkpointedTo: 7 });
    expect(check(lines.slice(0, -1)).problem).toMatchObject({ seq: 8, reason: expect.stringMatching(/event 8 is missing/) });
  });

  it("fails on an edited byte, naming the edited entry", () => {
    const lines = exportLines(LOG, 3, 10);
    const edited = editEntry(lines, 5, (d) => {
      const at = d.indexOf("complete");
      d[at] = "C".charCodeAt(0);
      return d;
    });
    expect(check(edited).problem).toEqual({ seq: 5, reason: expect.stringMatching(/event #5 was altered/) });
  });

  it("fails on a removed entry, naming it", () => {
    const lines = exportLines(LOG, 3, 10);
    const removed = lines.filter((l) => (JSON.parse(l) as { seq?: number }).seq !== 6);
    expect(check(removed).problem).toMatchObject({ seq: 6, reason: expect.stringMatching(/event 6 is missing/) });
    const cut = lines.filter((l) => (JSON.parse(l) as { seq?: number }).seq !== 10 && (JSON.parse(l) as { seq?: number }).seq !== undefined);
    expect(check([lines[0] as string, ...cut.filter((l) => (JSON.parse(l) as { seq: number }).seq < 10)]).problem).toMatchObject({ seq: 10 });
  });

  it("fails on a forged checkpoint: another signer, a bad signature, or a head that is not the chain's", () => {
    const lines = exportLines(LOG, 3, 10);
    const resign = (signer: KeyPair, head?: string) =>
      editEntry(lines, 17, (d) => {
        const cp = decodeMap(d);
        const h = head ?? (cp["head"] as string);
        return encode({ ...cp, head: h, key: signer.getPublicKey(), sig: sign(signer, checkpointMessage(cp["upTo"] as number, h)) });
      });
    expect(check(resign(intruder)).problem).toMatchObject({ seq: 17, reason: expect.stringMatching(/signed by .*not the kernel key/) });
    expect(check(resign(kernel, "1".repeat(64))).problem).toMatchObject({ seq: 17, reason: expect.stringMatching(/does not match the chain/) });
    const badSig = editEntry(lines, 17, (d) => encode({ ...decodeMap(d), sig: Buffer.alloc(64, 7).toString("base64") }));
    expect(check(badSig).problem).toMatchObject({ seq: 17, reason: "checkpoint signature is invalid" });
  });

  it("fails when no signed checkpoint covers the range (the seal was cut), since the chain alone can be rebuilt by anyone", () => {
    const lines = exportLines(LOG, 3, 10);
    const unsealed = lines.filter((l) => ((JSON.parse(l) as { seq?: number }).seq ?? 0) <= 10);
    // The checkpoint at #8 signs #1..#7; nothing signs #8 (itself) to #10.
    expect(check(unsealed).problem).toMatchObject({ seq: 8, reason: expect.stringMatching(/#8\.\.#10 are not covered by a signed checkpoint/) });
  });

  it("fails on a bundle re-signed with another key when the verifier pins the kernel's, and on a missing anchor", () => {
    const lines = exportLines(LOG, 9, 12);
    const header = JSON.parse(lines[0] as string) as Record<string, unknown>;
    const claimsIntruder = [JSON.stringify({ ...header, kernelKey: intruder.getPublicKey() }), ...lines.slice(1)];
    expect(check(claimsIntruder, kernel.getPublicKey()).problem).toMatchObject({ seq: 9, reason: expect.stringMatching(/not the trusted key/) });
    const { anchor: _anchor, ...noAnchor } = header;
    expect(check([JSON.stringify(noAnchor), ...lines.slice(1)]).problem).toMatchObject({ seq: 9, reason: expect.stringMatching(/no anchor/) });
    const wrongAnchor = [JSON.stringify({ ...header, anchor: { seq: 8, hash: "2".repeat(64) } }), ...lines.slice(1)];
    expect(check(wrongAnchor).problem).toMatchObject({ seq: 8, reason: expect.stringMatching(/altered/) });
    expect(check(["not json"]).problem).toMatchObject({ seq: 1, reason: expect.stringMatching(/not JSON/) });
    expect(check([]).problem).toMatchObject({ seq: 0, reason: expect.stringMatching(/empty/) });
  });
});
