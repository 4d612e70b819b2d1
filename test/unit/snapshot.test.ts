/**
 * Kernel state snapshots: the encoding keeps everything the state digest covers (and the order
 * eviction depends on), and the store hands back only a snapshot that is signed by the kernel's
 * key, taken after an entry the log still has, and whose bytes are the ones that were signed.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open } from "lmdb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EVENT_VERSION, EventType, GENESIS_PREV, encode, entryHash, subjects, type LogEvent } from "../../src/protocol/mod.js";
import { SnapshotStore, decodeState, encodeState, type SnapshotChecks } from "../../services/kernel/snapshot.js";
import { evolve, initialState, stateDigest, type KernelState } from "../../services/kernel/state.js";
import { loadOrCreateAuthority, sign, verifySignature, type KeyPair } from "../../src/transport/identity.js";

const NOW = 1_700_000_000_000;
const TRACE = "0123456789abcdef0123456789abcdef";
const POLICY_SET = "f".repeat(64);
const DECISION = { effect: "allow", policies: ["p"], policySet: POLICY_SET };

/** A fold over a small but varied history, keeping each entry's hash the way the log would. */
class History {
  readonly state: KernelState = initialState();
  readonly hashes = new Map<number, string>();
  private seq = 0;
  private prev = GENESIS_PREV;

  add(subject: string, fields: Record<string, unknown>): LogEvent {
    this.seq += 1;
    const event = { v: EVENT_VERSION, id: `01JEVENT${String(this.seq).padStart(18, "0")}`, at: NOW + this.seq, seq: this.seq, prev: this.prev, ...fields } as unknown as LogEvent;
    const hash = entryHash(subject, encode(event));
    evolve(this.state, event, hash);
    this.hashes.set(this.seq, hash);
    this.prev = hash;
    return event;
  }

  caused(actor: string, syscall: string): Record<string, unknown> {
    return { actor, principal: "alice", syscall, trace: TRACE, depth: 1 };
  }

  /** Identities, a budget, messages, a request and its reply, an effect, a held action, a tool, a denial. */
  static varied(): History {
    const h = new History();
    h.add(subjects.logKernel("genesis"), { type: EventType.Genesis, kernelKey: "KERNEL" });
    h.add(subjects.logKernel("policy"), { type: EventType.PolicyLoaded, policySet: POLICY_SET, policies: ["p"] });
    for (const [name, kind] of [["alice", "principal"], ["coord", "agent"], ["worker", "agent"]] as const) {
      h.add(subjects.logIdentity(name), { type: EventType.IdentityRegistered, name, kind, groups: [], publicKey: `U${name}` });
    }
    h.add(subjects.logKernel("budget"), { type: EventType.BudgetSet, scope: "trace", name: "*", limits: { tokens: 10_000 } });
    const send = h.add(subjects.logInbox("coord"), { type: EventType.Message, kind: "send", to: "coord", body: { job: 1 }, decision: DECISION, labels: ["untrusted"], ...h.caused("alice", "a:0") });
    const request = h.add(subjects.logInbox("worker"), {
      type: EventType.Message,
      kind: "request",
      to: "worker",
      body: "help",
      deadline: NOW + 60_000,
      decision: DECISION,
      causation: send.id,
      ...h.caused("coord", "c:0"),
    });
    h.add(subjects.logReplies("coord"), { type: EventType.Reply, to: "coord", inReplyTo: request.id, body: "done", decision: DECISION, ...h.caused("worker", "w:0") });
    h.add(subjects.logInbox("worker"), { type: EventType.Message, kind: "request", to: "worker", body: "again", deadline: NOW + 90_000, decision: DECISION, ...h.caused("coord", "c:1") });
    const effect = h.add(subjects.logEffect("coord"), {
      type: EventType.EffectStarted,
      kind: "llm",
      op: "complete",
      target: "claude-test",
      request: { model: "claude-test" },
      decision: DECISION,
      labels: [],
      reserved: { tokens: 500, microUsd: 20 },
      causation: send.id,
      ...h.caused("coord", "c:2"),
    });
    h.add(subjects.logEffect("coord"), {
      type: EventType.EffectCompleted,
      effect: effect.id,
      kind: "llm",
      ok: true,
      result: { text: "hi" },
      labels: ["untrusted"],
      spent: { tokens: 120, microUsd: 7 },
      causation: send.id,
      ...h.caused("coord", "c:2"),
    });
    h.add(subjects.logApproval("coord"), {
      type: EventType.ApprovalRequested,
      op: "tool",
      request: { id: "c:3", tool: "db-drop", args: { table: "t" } },
      digest: "d".repeat(64),
      reason: "destructive",
      labels: ["untrusted"],
      expiresAt: NOW + 900_000,
      decision: DECISION,
      ...h.caused("coord", "c:3"),
    });
    h.add(subjects.logDecision("worker"), { type: EventType.Denied, op: "send", to: "alice", decision: { ...DECISION, effect: "deny" }, error: { code: "forbidden", message: "no" }, ...h.caused("worker", "w:1") });
    h.add(subjects.logTool("file-read"), { type: EventType.ToolRegistered, manifest: { name: "file-read", version: "1", effect: "read" }, hash: "a".repeat(64) });
    h.add(subjects.logKernel("checkpoint"), { type: EventType.Checkpoint, key: "KERNEL", upTo: 15, head: "0".repeat(64), sig: "x" });
    return h;
  }
}

describe("state snapshot encoding", () => {
  it("decodes to a state with the same digest, every projection restored", () => {
    const h = History.varied();
    const copy = decodeState(encodeState(h.state));
    expect(stateDigest(copy)).toBe(stateDigest(h.state));
    expect(copy.head).toEqual(h.state.head);
    expect(copy.pending.size).toBe(1);
    expect(copy.approvals.size).toBe(1);
    expect(copy.agentLabels.get("coord")).toEqual(["untrusted"]);
    expect(copy.budgets.report().length).toBeGreaterThan(0);
  });

  it("goes on folding exactly like the state it was taken from", () => {
    const h = History.varied();
    const copy = decodeState(encodeState(h.state));
    const approval = [...h.state.approvals.keys()][0];
    const later = { v: EVENT_VERSION, id: "01JLATER00000000000000000", at: NOW + 100, seq: 17, prev: h.state.head.hash, type: EventType.ApprovalDecided, approval, verdict: "deny", by: "carol" } as unknown as LogEvent;
    evolve(h.state, later, "e".repeat(64));
    evolve(copy, later, "e".repeat(64));
    expect(stateDigest(copy)).toBe(stateDigest(h.state));
    expect(copy.approvals.get(approval as never)?.status).toBe("denied");
  });

  it("keeps the order of remembered entries (the oldest is evicted first)", () => {
    const h = History.varied();
    const copy = decodeState(encodeState(h.state));
    expect([...copy.syscalls.keys()]).toEqual([...h.state.syscalls.keys()]);
    expect([...copy.budgets.usage.keys()]).toEqual([...h.state.budgets.usage.keys()]);
  });

  it("refuses bytes that are not a snapshot with an internal error", () => {
    expect(() => decodeState(encode({ hello: "world" }))).toThrow(/does not hold a kernel state/);
  });
});

describe("snapshot store", () => {
  let dir: string;
  let store: SnapshotStore;
  const keysDir = mkdtempSync(join(tmpdir(), "maxwell-snapshot-keys-"));
  const kernel = loadOrCreateAuthority(keysDir).kernel;
  const other = loadOrCreateAuthority(join(keysDir, "other")).kernel;
  const KEY = kernel.getPublicKey();
  // Both claim the kernel's public key; only the kernel's own private key makes it true.
  const signer = (kp: KeyPair) => ({ key: KEY, sign: (m: string) => sign(kp, m) });
  const verify = verifySignature;

  function checks(h: History, overrides: Partial<SnapshotChecks> = {}): SnapshotChecks {
    return { key: KEY, verify, hashAt: async (seq) => h.hashes.get(seq), ...overrides };
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "maxwell-snapshots-"));
    store = SnapshotStore.open(dir, 3);
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("loads the newest snapshot that checks out, decoded to the state it was taken of", async () => {
    const h = History.varied();
    const info = await store.save(h.state, signer(kernel));
    const { loaded, skipped } = await store.load(checks(h));
    expect(skipped).toEqual([]);
    expect(loaded?.info.seq).toBe(info.seq);
    expect(stateDigest(loaded!.state)).toBe(stateDigest(h.state));
  });

  it("passes over a snapshot signed by another key", async () => {
    const h = History.varied();
    await store.save(h.state, signer(other));
    const { loaded, skipped } = await store.load(checks(h));
    expect(loaded).toBeUndefined();
    expect(skipped[0]?.reason).toMatch(/signature does not verify/);
  });

  it("passes over a snapshot of another log (the entry at its seq has another hash) or past the log's end", async () => {
    const h = History.varied();
    await store.save(h.state, signer(kernel));
    expect((await store.load(checks(h, { hashAt: async () => "b".repeat(64) }))).skipped[0]?.reason).toMatch(/not the one it was taken after/);
    expect((await store.load(checks(h, { hashAt: async () => undefined }))).skipped[0]?.reason).toMatch(/has no entry/);
  });

  it("passes over a snapshot whose bytes were changed after signing, and falls back to an older good one", async () => {
    const h = History.varied();
    const older = History.varied();
    // The older snapshot: the same history cut short (a prefix state), saved first.
    const early = decodeState(encodeState(h.state));
    await store.save(early, signer(kernel));
    const later = { v: EVENT_VERSION, id: "01JLATER00000000000000001", at: NOW + 200, seq: 17, prev: h.state.head.hash, type: EventType.Checkpoint, key: KEY, upTo: 16, head: h.state.head.hash, sig: "y" } as unknown as LogEvent;
    evolve(h.state, later, "c".repeat(64));
    h.hashes.set(17, "c".repeat(64));
    await store.save(h.state, signer(kernel));
    await store.close();
    // Flip a byte inside the newest snapshot's state, as an attacker with the disk could.
    const env = open({ path: dir, compression: false });
    const db = env.openDB<{ info: unknown; state: Uint8Array }, number>("snapshots", { encoding: "msgpack" });
    const stored = db.get(17)!;
    const bytes = Buffer.from(stored.state);
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] ?? 0) ^ 0xff;
    await db.put(17, { ...stored, state: bytes });
    await env.close();
    store = SnapshotStore.open(dir, 3);
    const { loaded, skipped } = await store.load(checks(h));
    expect(skipped).toEqual([{ seq: 17, reason: expect.stringMatching(/bytes do not have the hash/) }]);
    expect(loaded?.info.seq).toBe(16);
    expect(stateDigest(loaded!.state)).toBe(stateDigest(older.state));
  });

  it("keeps only the newest few and loads the nearest one at or before a seq", async () => {
    const h = History.varied();
    for (let seq = 17; seq <= 21; seq++) {
      const cp = { v: EVENT_VERSION, id: `01JCP${String(seq).padStart(20, "0")}`, at: NOW + seq, seq, prev: h.state.head.hash, type: EventType.Checkpoint, key: KEY, upTo: seq - 1, head: h.state.head.hash, sig: "z" } as unknown as LogEvent;
      const hash = `${seq}`.padStart(64, "0");
      evolve(h.state, cp, hash);
      h.hashes.set(seq, hash);
      await store.save(h.state, signer(kernel));
    }
    expect(store.list().map((s) => s.seq)).toEqual([19, 20, 21]);
    expect((await store.load(checks(h), 20)).loaded?.info.seq).toBe(20);
    expect((await store.load(checks(h), 18)).loaded).toBeUndefined();
  });
});
