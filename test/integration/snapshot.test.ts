/**
 * State snapshots in a running deployment: the kernel saves its folded state at intervals and at
 * a clean stop, restarts from the newest snapshot that checks out (folding only the log after
 * it), passes over one that was tampered with, and `replay state` checks every snapshot against
 * a fold from the start and starts time travel from the nearest one.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { open } from "lmdb";
import { EventType, LOG_STREAM, SyscallOp, encode, subjects, syscallId } from "../../src/protocol/mod.js";
import { connectNats, jetstream, jetstreamManager } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { SnapshotStore, decodeState } from "../../services/kernel/snapshot.js";
import { keyFiles, loadKey, sign } from "../../src/transport/identity.js";
import { recordingAgent, startHarness, until, type Harness } from "../support/harness.js";

describe("kernel state snapshots", () => {
  let h: Harness;
  const outcomes = new Map<string, unknown>();
  let alice: SyscallClient;
  let closeAlice: () => Promise<void>;
  let step = 0;

  beforeAll(async () => {
    h = await startHarness({ kernelArgs: ["--snapshot-every", "10"] });
    const a = await h.register("alice", "principal");
    const coord = await h.register("coord", "agent", ["coordinators"]);
    const worker = await h.register("worker", "agent", ["workers"]);
    await h.agent(
      recordingAgent(outcomes, async (body, ctx) => ctx.request("worker", { n: body["n"] })),
      coord.creds,
      "coord",
    );
    await h.agent(
      recordingAgent(new Map(), async (body) => body),
      worker.creds,
      "worker",
    );
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(a.creds), name: "alice", inboxPrefix: subjects.inboxPrefix("alice") });
    alice = new SyscallClient(nc, "alice");
    closeAlice = () => nc.close();
  });
  afterAll(async () => {
    await closeAlice?.();
    await h?.close();
  });

  /** alice gives coord `n` pieces of work; each is a send, a request and a reply in the log. */
  async function work(n: number): Promise<void> {
    const tags: string[] = [];
    for (let i = 0; i < n; i++) {
      const tag = `w${step}`;
      tags.push(tag);
      await alice.call(SyscallOp.Send, { id: syscallId("snap", step++), to: "coord", body: { tag, n: i } });
    }
    await until(() => tags.every((t) => outcomes.has(t)), `${n} pieces of work`);
  }

  function stored(): number[] {
    const store = SnapshotStore.open(h.layout.kernelSnapshots);
    try {
      return store.list().map((s) => s.seq);
    } finally {
      void store.close();
    }
  }

  async function snapshotAfterCheckpoint(): Promise<number> {
    const before = stored().at(-1) ?? 0;
    await h.admin.checkpoint();
    let latest = before;
    await until(() => (latest = stored().at(-1) ?? 0) > before, "a snapshot after the checkpoint");
    return latest;
  }

  async function restartKernel(): Promise<void> {
    h.kernelLog.length = 0;
    await h.killKernel("SIGTERM");
    await h.startKernel();
    await h.admin.waitForKernel();
  }

  it("saves snapshots after checkpoints, each one equal to a fold from the start", async () => {
    await work(5);
    const first = await snapshotAfterCheckpoint();
    await work(5);
    const second = await snapshotAfterCheckpoint();
    expect(second).toBeGreaterThan(first);
    const r = await h.admin.replayState();
    expect(r.identical).toBe(true);
    expect(r.folded).toBe(r.events);
    expect(r.snapshots.map((c) => c.seq)).toEqual(expect.arrayContaining([first, second]));
    expect(r.snapshots.every((c) => c.identical)).toBe(true);
  });

  it("travels in time from the nearest snapshot, to the same state as a fold from the start", async () => {
    const [first] = stored();
    const to = (first as number) + 4;
    const fromSnapshot = await h.admin.replayState(to);
    const full = await h.admin.replayState(to, { full: true });
    expect(fromSnapshot.fromSnapshot).toBe(first);
    expect(fromSnapshot.folded).toBe(4);
    expect(full.fromSnapshot).toBeUndefined();
    expect(full.folded).toBe(to);
    expect(fromSnapshot.replayed).toBe(full.replayed);
    expect(fromSnapshot.seq).toBe(to);
  });

  it("restarts from the snapshot taken at a clean stop and goes on with the same state", async () => {
    await restartKernel();
    expect(h.kernelLog.some((l) => l.includes("state loaded from a snapshot"))).toBe(true);
    await work(3);
    const r = await h.admin.replayState();
    expect(r.identical).toBe(true);
    expect(r.snapshots.every((c) => c.identical)).toBe(true);
  });

  it("passes over a snapshot whose bytes were changed on disk and still arrives at the live state", async () => {
    await h.killKernel("SIGTERM");
    const seqs = stored();
    const newest = seqs.at(-1) as number;
    const env = open({ path: h.layout.kernelSnapshots, compression: false });
    const db = env.openDB<{ info: unknown; state: Uint8Array }, number>("snapshots", { encoding: "msgpack" });
    const snapshot = db.get(newest);
    expect(snapshot).toBeDefined();
    const bytes = Buffer.from(snapshot!.state);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = (bytes[middle] ?? 0) ^ 0xff;
    await db.put(newest, { ...snapshot!, state: bytes });
    await env.close();

    h.kernelLog.length = 0;
    await h.startKernel();
    await h.admin.waitForKernel();
    expect(h.kernelLog.some((l) => l.includes("passed over") && l.includes(String(newest)))).toBe(true);
    await work(2);
    const r = await h.admin.replayState();
    expect(r.identical).toBe(true);
    // replay state reports it as one the kernel passes over, not as a different state.
    expect(r.snapshots).toContainEqual({ seq: newest, identical: false, unusable: expect.stringMatching(/bytes do not have the hash/) });
  });

  it("names a snapshot whose state is not the log's, even one signed with the kernel's own key", async () => {
    await h.killKernel("SIGTERM");
    // Someone holding the kernel's key signs a state the log does not explain (an identity gone).
    const store = SnapshotStore.open(h.layout.kernelSnapshots);
    const newest = store.list().at(-1)?.seq as number;
    const state = decodeState(await readSnapshotBytes(newest));
    state.identities.delete("worker");
    const key = loadKey(keyFiles(h.layout.keys).kernel);
    await store.save(state, { key: key.getPublicKey(), sign: (m) => sign(key, m) });
    await store.close();

    h.kernelLog.length = 0;
    await h.startKernel();
    await h.admin.waitForKernel();
    const r = await h.admin.replayState();
    expect(r.identical).toBe(false);
    expect(r.snapshots).toContainEqual({ seq: newest, identical: false });
    expect(r.snapshots.filter((c) => c.seq !== newest).every((c) => c.identical || c.unusable !== undefined)).toBe(true);
  });

  it("still checks the chain after its snapshot: refuses to start on an entry forged while it was down", async () => {
    await h.killKernel("SIGTERM");
    const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "forger", reconnect: false });
    try {
      const jsm = await jetstreamManager(nc);
      const last = (await jsm.streams.info(LOG_STREAM)).state.last_seq;
      const forged = { v: 1, seq: last + 1, prev: "f".repeat(64), id: "01JF0RGED00000000000000000", at: Date.now(), type: EventType.IdentityRegistered, name: "mallory", kind: "principal", groups: ["approvers"], publicKey: "UMALLORY" };
      await jetstream(nc).publish(subjects.logIdentity("mallory"), encode(forged));
    } finally {
      await nc.close();
    }
    h.kernelLog.length = 0;
    await expect(h.startKernel()).rejects.toThrow(/exited/);
    expect(h.kernelLog.some((l) => l.includes("hash chain is broken") && l.includes("refusing to append"))).toBe(true);
    expect(stored().length).toBeGreaterThan(0);
  });

  async function readSnapshotBytes(seq: number): Promise<Uint8Array> {
    const env = open({ path: h.layout.kernelSnapshots, compression: false });
    try {
      const db = env.openDB<{ state: Uint8Array }, number>("snapshots", { encoding: "msgpack" });
      return db.get(seq)?.state as Uint8Array;
    } finally {
      await env.close();
    }
  }
});
