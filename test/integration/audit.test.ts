/**
 * Audit and export end to end: a real kernel, model gateway and tool service, SDK agents doing a
 * multi-agent piece of work (a request to a worker that calls the model, a read tool, a denied
 * send, a destructive tool call held until a human approves it) next to another principal's
 * work; then the built CLI: `audit trace` (text, JSON, HTML) shows exactly that trace's events,
 * `audit principal|agent` summarize (through the log index, as a full read would, reading only the
 * subject's entries), and `log export` + `verify --bundle` accept the untouched bundle and name the
 * entry in each tampered one.
 */
import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createServer } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, SyscallOp, checkpointMessage, decodeMap, encode, newScope, subjects, syscallId, type LogEvent } from "../../src/protocol/mod.js";
import { ActivityFold, TraceCollector, auditTrace, type Since, type SummarySubject } from "../../src/runtime/audit.js";
import { LogIndex, indexedActivity, indexedTraceEvidence, type LogReader } from "../../src/runtime/log-index.js";
import { cliEntry } from "../../src/runtime/paths.js";
import { createLogger } from "../../src/runtime/logger.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { sign, verifySignature } from "../../src/transport/identity.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { defineAgent } from "../../src/sdk/mod.js";
import { LlmGateway } from "../../services/llm/gateway.js";
import { startOfflineModel, type OfflineModel } from "../../services/llm/offline-server.js";
import { eventually, startHarness, until, type Harness } from "../support/harness.js";
import { runCli, type CliResult } from "../support/cli.js";
import { scriptedManifest, startScriptedTools, type ScriptedTools } from "../support/scripted-tools.js";

const run = promisify(execFile);

describe("maxwell audit and log export", () => {
  let h: Harness;
  let model: OfflineModel;
  let gateway: LlmGateway;
  let tools: ScriptedTools;
  let out: string;
  const connections: NatsConnection[] = [];
  const clients = new Map<string, SyscallClient>();
  const outcomes = new Map<string, unknown>();
  let log: LogEvent[] = [];
  let trace = "";
  let otherTrace = "";
  /** Ids of every event of the audited trace, and of the decisions on its holds. */
  let expected: string[] = [];

  const maxwell = (...args: string[]): Promise<CliResult> => runCli(["--data", h.dir, "--nats", h.url, ...args]);

  async function principal(name: string, groups: string[] = []): Promise<SyscallClient> {
    const r = await h.register(name, "principal", groups);
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(r.creds), name, inboxPrefix: subjects.inboxPrefix(name) });
    connections.push(nc);
    const client = new SyscallClient(nc, name, { retryForMs: 20_000 });
    clients.set(name, client);
    return client;
  }

  const send = (from: string, to: string, body: unknown) => (clients.get(from) as SyscallClient).call(SyscallOp.Send, { id: syscallId(`t-${newScope()}`, 0), to, body });

  async function readLog(): Promise<LogEvent[]> {
    const events: LogEvent[] = [];
    for await (const e of h.admin.entries(1)) events.push(decodeMap(e.data) as unknown as LogEvent);
    return events;
  }

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), "maxwell-audit-"));
    h = await startHarness();
    model = await startOfflineModel({ apiKey: "offline-test-key" });
    gateway = new LlmGateway({ servers: h.url, creds: h.layout.credsOf("svc-llm"), apiKey: "offline-test-key", baseURL: model.url, log: createLogger("llm", "silent") });
    await gateway.start();
    tools = await startScriptedTools(h, { lookup: () => ({ rows: 3 }), "db-drop": (args) => ({ dropped: (args as { table: string }).table }) });
    await h.admin.toolRegister({ manifest: scriptedManifest("lookup", "read") });
    await h.admin.toolRegister({ manifest: scriptedManifest("db-drop", "destructive") });
    await principal("alice");
    await principal("bob");
    const carol = await principal("carol", ["approvers"]);

    const coordinator = await h.register("coordinator", "agent", ["coordinators", "tool-users"]);
    const worker = await h.register("worker-1", "agent", ["workers"]);
    await h.register("bystander", "agent");
    await h.agent(
      defineAgent({
        async onMessage(msg, ctx) {
          const answer = await ctx.request<string>("worker-1", { question: "how many rows?" }, { timeoutMs: 20_000 });
          const rows = await ctx.tool("lookup", { table: "orders" });
          const gossip = await ctx.send("bystander", "psst").then(() => "sent", (err: Error) => err.message);
          const dropped = await ctx.tool("db-drop", { table: "staging" });
          outcomes.set("coordinator", { answer, rows: rows.result, gossip, dropped: dropped.result, body: msg.body });
        },
      }),
      coordinator.creds,
      "coordinator",
    );
    await h.agent(
      defineAgent({
        async onMessage(msg, ctx) {
          const reply = await ctx.llm({ model: "maxwell-offline", max_tokens: 64, messages: [{ role: "user", content: JSON.stringify(msg.body) }] });
          outcomes.set(`worker:${msg.principal}`, true);
          return { said: reply.message.content.map((b) => b.text ?? "").join("") };
        },
      }),
      worker.creds,
      "worker-1",
    );

    await send("alice", "coordinator", { task: "audit-me" });
    await send("bob", "worker-1", { task: "bob's own work" });
    await eventually(async () => (await h.admin.approvals()).some((a) => a.actor === "coordinator"), "the held drop");
    const held = (await h.admin.approvals()).find((a) => a.actor === "coordinator");
    await carol.call(SyscallOp.Approve, { id: syscallId(`t-${newScope()}`, 0), body: { approval: held?.id, digest: held?.digest, verdict: "approve", reason: "staging only" } });
    await until(() => outcomes.has("coordinator") && outcomes.has("worker:bob"), "both pieces of work");
    await h.admin.checkpoint();

    log = await readLog();
    const start = log.find((e) => e.type === EventType.Message && e.actor === "alice") as Extract<LogEvent, { type: "message" }>;
    trace = start.trace;
    otherTrace = (log.find((e) => e.type === EventType.Message && e.actor === "bob") as Extract<LogEvent, { type: "message" }>).trace;
    const holds = new Set(log.filter((e) => e.type === EventType.ApprovalRequested && e.trace === trace).map((e) => e.id));
    expected = log.filter((e) => ("trace" in e && e.trace === trace) || (e.type === EventType.ApprovalDecided && holds.has(e.approval))).map((e) => e.id);
  });

  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await tools?.close();
    await gateway?.stop(0);
    await model?.close();
    await h?.close();
    rmSync(out, { recursive: true, force: true });
  });

  it("ran the work the audit is about: a request, a model call, a tool call, a denial, a hold and its approval", () => {
    expect(outcomes.get("coordinator")).toMatchObject({ rows: { rows: 3 }, dropped: { dropped: "staging" } });
    const kinds = new Set(log.filter((e) => expected.includes(e.id)).map((e) => e.type));
    for (const t of [EventType.Message, EventType.Reply, EventType.Denied, EventType.EffectStarted, EventType.EffectCompleted, EventType.ApprovalRequested, EventType.ApprovalDecided]) expect(kinds).toContain(t);
    expect(otherTrace).not.toBe(trace);
  });

  it("audit trace prints the causal tree: every event of the trace, by sequence, and nothing of the other", async () => {
    const r = await maxwell("audit", "trace", trace.slice(0, 12));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`trace ${trace}`);
    expect(r.stdout).toMatch(/asked by alice at /);
    const seqs = [...r.stdout.matchAll(/─ #(\d+) /g)].map((m) => Number(m[1]));
    expect(seqs.sort((a, b) => a - b)).toEqual(log.filter((e) => expected.includes(e.id)).map((e) => e.seq));
    expect(r.stdout).toMatch(/^└─ #\d+ .*send alice → coordinator {2}allow \[principals-send-work\] set [0-9a-f]{12}/m);
    expect(r.stdout).toMatch(/^ {3}├─ #\d+ .*request coordinator → worker-1 {2}allow \[coordinators-to-workers,/m);
    expect(r.stdout).toMatch(/model worker-1 → maxwell-offline complete {2}allow \[/);
    expect(r.stdout).toMatch(/answer maxwell-offline → worker-1 {2}ok .*\d+\+\d+ tokens \(maxwell-offline\) {2}\$\d+\.\d{6}/);
    expect(r.stdout).toMatch(/reply worker-1 → coordinator/);
    expect(r.stdout).toMatch(/result lookup → coordinator {2}ok \{"rows":3\}/);
    expect(r.stdout).toMatch(/DENIED coordinator send → bystander {2}forbidden/);
    expect(r.stdout).toMatch(/HELD coordinator tool → db-drop: destructive tool call {2}approval \w+ {2}allow \[hold-destructive,/);
    expect(r.stdout).toMatch(/APPROVED by carol: staging only/);
    expect(r.stdout).toMatch(/tool coordinator → db-drop call .*released by approval/);
    expect(r.stdout).toMatch(/signature verifies against the genesis kernel key/);
    expect(r.stdout).not.toContain("bob");
    expect(r.stdout).not.toContain(otherTrace.slice(0, 8));
  });

  it("audit trace --json gives the same tree, with the checkpoint that signs each event", async () => {
    const r = await maxwell("audit", "trace", trace, "--json");
    expect(r.code).toBe(0);
    interface Node {
      event: { id: string; seq: number };
      checkpoint?: number;
      children: Node[];
    }
    const a = JSON.parse(r.stdout) as { trace: string; principal: string; roots: Node[]; checkpoints: Array<{ seq: number; upTo: number; verified: boolean }>; tally: { models: { calls: number; inputTokens: number } } };
    const nodes: Node[] = [];
    const walk = (ns: Node[]): void => ns.forEach((n) => (nodes.push(n), walk(n.children)));
    walk(a.roots);
    expect(nodes.map((n) => n.event.id).sort()).toEqual([...expected].sort());
    expect(a.principal).toBe("alice");
    expect(a.tally.models.calls).toBe(1);
    expect(a.tally.models.inputTokens).toBeGreaterThan(0);
    // The checkpoint asked for after the work covers all of it, and verifies.
    expect(a.checkpoints.length).toBeGreaterThan(0);
    expect(a.checkpoints.every((c) => c.verified)).toBe(true);
    for (const n of nodes) {
      const cp = a.checkpoints.find((c) => c.seq === n.checkpoint);
      expect(cp?.upTo).toBeGreaterThanOrEqual(n.event.seq);
      expect(a.checkpoints.filter((c) => c.seq < (cp?.seq ?? 0)).every((c) => c.upTo < n.event.seq)).toBe(true);
    }
  });

  it("audit trace --html writes a self-contained report holding every event id of the trace and none of the other", async () => {
    const file = join(out, "trace.html");
    const r = await maxwell("audit", "trace", trace, "--html", file);
    expect(r.code).toBe(0);
    expect(existsSync(file)).toBe(true);
    const html = readFileSync(file, "utf8");
    for (const id of expected) expect(html).toContain(`id="ev-${id}"`);
    for (const e of log.filter((x) => "trace" in x && x.trace === otherTrace)) expect(html).not.toContain(e.id);
    expect(html).not.toMatch(/<script|<link |(src|href)="https?:/i);
  });

  it("audit trace through the log index prints exactly what a full scan of the log prints", async () => {
    const generated = (html: string) => html.replace(/ at \d{4}-\d\d-\d\dT[\d:.]+Z; check the whole chain/, " at TIME; check the whole chain");
    for (const t of [trace.slice(0, 10), otherTrace]) {
      const [text, scanText, json, scanJson] = await Promise.all([
        maxwell("audit", "trace", t),
        maxwell("audit", "trace", t, "--scan"),
        maxwell("audit", "trace", t, "--json", "--html", join(out, `indexed-${t}.html`)),
        maxwell("audit", "trace", t, "--json", "--scan", "--html", join(out, `scanned-${t}.html`)),
      ]);
      expect(text.code).toBe(0);
      expect(text.stderr).toBe("");
      expect(text.stdout).toBe(scanText.stdout);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toEqual(JSON.parse(scanJson.stdout));
      expect(generated(readFileSync(join(out, `indexed-${t}.html`), "utf8"))).toBe(generated(readFileSync(join(out, `scanned-${t}.html`), "utf8")));
    }
    const missing = await Promise.all([maxwell("audit", "trace", "0123456789abcdef"), maxwell("audit", "trace", "0123456789abcdef", "--scan")]);
    expect(missing[0]).toEqual(missing[1]);
    expect(missing[0].code).toBe(1);
    // The CLI built the index in the data dir and caught it up to the log's end.
    const index = LogIndex.open(h.layout.index);
    try {
      expect(index.watermark()?.seq).toBeGreaterThanOrEqual((log.at(-1) as LogEvent).seq);
    } finally {
      await index.close();
    }
  });

  /** Reads the log through the kernel, as the CLI does when a daemon runs, counting what it reads. */
  function countingReader(): { reader: LogReader; counts: { scanned: number; fetched: number } } {
    const counts = { scanned: 0, fetched: 0 };
    const reader: LogReader = {
      async *entries({ from }) {
        for await (const e of h.admin.entries(from)) {
          counts.scanned += 1;
          yield e;
        }
      },
      async entriesAt(seqs) {
        const found = await h.admin.readAt(seqs);
        counts.fetched += found.length;
        return found;
      },
    };
    return { reader, counts };
  }

  it("audit trace through the index reads the trace's entries and the checkpoints that sign them, not the log", async () => {
    const index = LogIndex.open(join(out, "index"));
    const { reader, counts } = countingReader();
    try {
      // A longer log around the trace: other work the audit must not read.
      for (let i = 0; i < 300; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => h.admin.budgetSet({ scope: "agent", name: "bystander", limits: { toolCalls: 1000 + i + j } })));
      await index.catchUp(reader);
      const total = counts.scanned;
      expect(total).toBeGreaterThanOrEqual(log.length + 300);
      counts.scanned = 0;
      counts.fetched = 0;
      await index.catchUp(reader);
      const evidence = await indexedTraceEvidence(index, reader, trace.slice(0, 8), verifySignature);
      const audit = auditTrace(evidence);
      // What a full scan finds, from this process's own read of the whole log.
      const scan = new TraceCollector(trace.slice(0, 8), verifySignature);
      for await (const e of h.admin.entries(1)) scan.add(e);
      expect(audit).toEqual(auditTrace(scan.result()));
      expect(audit.events).toBe(expected.length);
      // Only what was appended since the first catch-up was read in order; the rest by sequence:
      // the trace's events, each covering checkpoint and the entry it signs, and the genesis event.
      expect(counts.scanned).toBeLessThan(10);
      expect(counts.fetched).toBeLessThanOrEqual(expected.length + 2 * audit.checkpoints.length + 1);
      expect(counts.fetched).toBeLessThan(total / 10);
    } finally {
      await index.close();
    }
  });

  it("audit principal and audit agent summarize, and --since narrows", async () => {
    const last = log.at(-1) as LogEvent;
    // Independent reads of the log: run them side by side.
    const [alice, text, worker, laterRun, badSince] = await Promise.all([
      maxwell("audit", "principal", "alice", "--json"),
      maxwell("audit", "principal", "alice"),
      maxwell("audit", "agent", "worker-1"),
      maxwell("audit", "principal", "alice", "--since", String(last.seq + 1), "--json"),
      maxwell("audit", "agent", "worker-1", "--since", "soon"),
    ]);
    expect(alice.code).toBe(0);
    const s = JSON.parse(alice.stdout) as { traces: string[]; tally: { messages: { send: number; request: number }; denials: Record<string, number>; holds: { approved: number }; models: { calls: number }; tools: Record<string, { ok: number; held: number }> } };
    expect(s.traces).toEqual([trace]);
    expect(s.tally.messages).toEqual({ send: 1, request: 1 });
    expect(s.tally.denials).toEqual({ forbidden: 1 });
    expect(s.tally.holds.approved).toBe(1);
    expect(s.tally.models.calls).toBe(1);
    expect(s.tally.tools).toMatchObject({ lookup: { ok: 1, held: 0 }, "db-drop": { ok: 1, held: 1 } });

    expect(text.stdout).toMatch(/^principal alice: \d+ events/);
    expect(text.stdout).toMatch(/agents that worked for it: coordinator, worker-1/);
    expect(text.stdout).toMatch(/db-drop: 1 started \(1 ok, 1 held\)/);

    expect(worker.code).toBe(0);
    expect(worker.stdout).toMatch(/worked for: (alice, bob|bob, alice)\n/);
    expect(worker.stdout).toMatch(/received 1 messages, 1 requests, 0 replies/);
    expect(worker.stdout).toMatch(/model calls 2:/);

    const later = JSON.parse(laterRun.stdout) as { tally: { events: number } };
    expect(later.tally.events).toBe(0);
    expect(badSince.code).toBe(1);
    expect(badSince.stderr).toMatch(/--since must be a log sequence or an ISO time/);
  });

  it("audit principal and audit agent through the log index print exactly what a full scan prints, with and without --since", async () => {
    const decision = log.find((e) => e.type === EventType.ApprovalDecided) as Extract<LogEvent, { type: "approval.decided" }>;
    const hold = log.find((e) => e.type === EventType.ApprovalRequested && e.id === decision.approval) as LogEvent;
    const start = log.find((e) => e.type === EventType.Message && e.actor === "alice") as LogEvent;
    expect(hold.seq).toBeLessThan(decision.seq);
    // From the decision on: its hold is before --since, and the decision still counts.
    const atDecision = String(decision.seq);
    const cases: Array<[string, string, string[]]> = [
      ["principal", "alice", []],
      ["principal", "alice", ["--since", atDecision]],
      ["principal", "carol", []],
      ["principal", "alice", ["--since", new Date(hold.at).toISOString()]],
      ["principal", "bob", []],
      ["agent", "worker-1", []],
      ["agent", "worker-1", ["--since", new Date(start.at).toISOString()]],
      ["agent", "coordinator", ["--since", atDecision]],
      ["agent", "nobody", []],
    ];
    let sawDecisionFromSince = false;
    // Four CLI runs per case; two cases at a time (a 2-core machine).
    for (let i = 0; i < cases.length; i += 2) {
      await Promise.all(
        cases.slice(i, i + 2).map(async ([kind, name, since]) => {
          const [text, scanText, json, scanJson] = await Promise.all([
            maxwell("audit", kind, name, ...since),
            maxwell("audit", kind, name, ...since, "--scan"),
            maxwell("audit", kind, name, ...since, "--json"),
            maxwell("audit", kind, name, ...since, "--json", "--scan"),
          ]);
          const what = `audit ${kind} ${name} ${since.join(" ")}`;
          expect(text.code, what).toBe(0);
          expect(text.stderr, what).toBe("");
          expect(text.stdout, what).toBe(scanText.stdout);
          expect(json.code, what).toBe(0);
          expect(json.stdout, what).toBe(scanJson.stdout);
          const summary = JSON.parse(json.stdout) as { tally: { events: number; holds: { approved: number } } };
          if (name !== "nobody") expect(summary.tally.events, what).toBeGreaterThan(0);
          if (since[1] === atDecision && summary.tally.holds.approved > 0) sawDecisionFromSince = true;
        }),
      );
    }
    expect(sawDecisionFromSince).toBe(true);
  });

  it("audit principal and audit agent through the index read the subject's entries, not the log", async () => {
    const index = LogIndex.open(join(out, "activity-index"));
    const { reader, counts } = countingReader();
    const fullRead = async (subject: SummarySubject, since?: Since) => {
      const fold = new ActivityFold(subject, since);
      let counted = 0;
      for await (const e of h.admin.entries(1)) {
        const before = fold.result().tally.events;
        fold.add(decodeMap(e.data) as unknown as LogEvent);
        if (fold.result().tally.events > before) counted += 1;
      }
      return { summary: fold.result(), counted };
    };
    try {
      // Other work around the subjects' that a summary must not read.
      for (let i = 0; i < 300; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => h.admin.budgetSet({ scope: "agent", name: "bystander", limits: { toolCalls: 2000 + i + j } })));
      await index.catchUp(reader);
      const total = counts.scanned;
      expect(total).toBeGreaterThanOrEqual(log.length + 300);
      const decision = log.find((e) => e.type === EventType.ApprovalDecided) as LogEvent;
      for (const [subject, since] of [
        [{ kind: "principal", name: "alice" }, undefined],
        [{ kind: "principal", name: "alice" }, { seq: decision.seq }],
        [{ kind: "agent", name: "worker-1" }, undefined],
        [{ kind: "agent", name: "coordinator" }, { seq: decision.seq }],
      ] as Array<[SummarySubject, Since | undefined]>) {
        counts.scanned = 0;
        await index.catchUp(reader);
        // Catching up read the entry at the watermark back; count from here.
        counts.fetched = 0;
        const indexed = await indexedActivity(index, reader, subject, since);
        const full = await fullRead(subject, since);
        const whole = await fullRead(subject);
        expect(indexed.summary).toEqual(full.summary);
        expect(indexed.undecodable).toBe(0);
        expect(full.summary.tally.events).toBeGreaterThan(0);
        // Nothing read in order beyond what was appended; by sequence, only the subject's entries.
        expect(counts.scanned).toBeLessThan(10);
        expect(counts.fetched).toBeGreaterThan(0);
        expect(counts.fetched).toBeLessThanOrEqual(whole.counted);
        expect(counts.fetched).toBeLessThan(total / 10);
      }
    } finally {
      await index.close();
    }
  });

  describe("log export and verify --bundle", () => {
    let bundle: string;
    let lines: string[];
    const from = () => (log.find((e) => e.id === expected[0]) as LogEvent).seq;
    const to = () => (log.filter((e) => expected.includes(e.id)).at(-1) as LogEvent).seq;
    /** verify --bundle needs no server: a data dir that does not exist and no --nats. */
    const offline = async (file: string, ...args: string[]): Promise<CliResult> => {
      try {
        const { stdout, stderr } = await run(process.execPath, [cliEntry(), "--data", join(out, "nowhere"), "verify", "--bundle", file, ...args]);
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
      }
    };
    const tampered = (name: string, edit: (ls: string[]) => string[]): string => {
      const file = join(out, `${name}.jsonl`);
      writeFileSync(file, edit([...lines]).join("\n") + "\n");
      return file;
    };
    const entryOf = (line: string) => JSON.parse(line) as { seq: number; subject: string; data: string; seal?: boolean };

    beforeAll(async () => {
      bundle = join(out, "trace.jsonl");
      const r = await maxwell("log", "export", "--from", String(from()), "--to", String(to()), "--out", bundle);
      expect(r.code).toBe(0);
      lines = readFileSync(bundle, "utf8").trim().split("\n");
    });

    it("exports the range with its anchor, the kernel key and the checkpoint that covers it", () => {
      const header = JSON.parse(lines[0] as string) as { format: string; from: number; to: number; kernelKey: string; anchor: { seq: number; hash: string } };
      const genesis = log[0] as Extract<LogEvent, { type: "kernel.genesis" }>;
      expect(header).toMatchObject({ format: "maxwell-log-bundle", from: from(), to: to(), kernelKey: genesis.kernelKey, anchor: { seq: from() - 1 } });
      const entries = lines.slice(1).map(entryOf);
      expect(entries.filter((e) => !e.seal).map((e) => e.seq)).toEqual(Array.from({ length: to() - from() + 1 }, (_, i) => from() + i));
      const last = decodeMap(Buffer.from((entries.at(-1) as { data: string }).data, "base64"));
      expect(last["type"]).toBe(EventType.Checkpoint);
      expect(last["upTo"]).toBeGreaterThanOrEqual(to());
    });

    it("verifies the untouched bundle offline: exit 0", async () => {
      const genesis = log[0] as Extract<LogEvent, { type: "kernel.genesis" }>;
      const [r, pinned, otherKey] = await Promise.all([offline(bundle), offline(bundle, "--key", genesis.kernelKey), offline(bundle, "--key", createServer().getPublicKey())]);
      expect(r.stdout).toMatch(new RegExp(`^ok: bundle #${from()}\\.\\.#${to()}, hash chain intact from the anchor`));
      expect(r.code).toBe(0);
      expect(pinned.code).toBe(0);
      expect(pinned.stdout).toContain("(the key given with --key)");
      expect(otherKey.code).toBe(3);
      expect(otherKey.stdout).toMatch(/not the trusted key/);
    });

    it("names the entry with an edited byte: exit 3", async () => {
      const target = lines.findIndex((l, i) => i > 0 && Buffer.from(entryOf(l).data, "base64").includes("audit-me"));
      expect(target).toBeGreaterThan(0);
      const seq = entryOf(lines[target] as string).seq;
      const file = tampered("edited", (ls) => {
        const e = entryOf(ls[target] as string);
        const data = Buffer.from(e.data, "base64");
        data[data.indexOf("audit-me")] = "A".charCodeAt(0);
        ls[target] = JSON.stringify({ ...e, data: data.toString("base64") });
        return ls;
      });
      const r = await offline(file);
      expect(r.code).toBe(3);
      expect(r.stdout).toMatch(new RegExp(`^FAILED at event #${seq}: event #${seq} was altered`));
    });

    it("names a removed entry: exit 3", async () => {
      const seq = from() + 2;
      const file = tampered("removed", (ls) => ls.filter((l, i) => i === 0 || entryOf(l).seq !== seq));
      const r = await offline(file);
      expect(r.code).toBe(3);
      expect(r.stdout).toMatch(new RegExp(`^FAILED at event #${seq}: event ${seq} is missing`));
    });

    it("rejects a forged checkpoint: exit 3", async () => {
      const forger = createServer();
      const file = tampered("forged", (ls) => {
        const e = entryOf(ls.at(-1) as string);
        const cp = decodeMap(Buffer.from(e.data, "base64"));
        const sig = sign(forger, checkpointMessage(cp["upTo"] as number, cp["head"] as string));
        ls[ls.length - 1] = JSON.stringify({ ...e, data: Buffer.from(encode({ ...cp, sig })).toString("base64") });
        return ls;
      });
      const seq = entryOf(lines.at(-1) as string).seq;
      const r = await offline(file);
      expect(r.code).toBe(3);
      expect(r.stdout).toBe(`FAILED at event #${seq}: checkpoint signature is invalid\n`);
      const cut = await offline(tampered("unsealed", (ls) => ls.filter((l, i) => i === 0 || !entryOf(l).seal)));
      expect(cut.code).toBe(3);
      expect(cut.stdout).toMatch(/not covered by a signed checkpoint/);
    });

    it("exports the whole log by default, and it verifies from the genesis event", async () => {
      const file = join(out, "all.jsonl");
      const r = await maxwell("log", "export", "--out", file);
      expect(r.code).toBe(0);
      const header = JSON.parse(readFileSync(file, "utf8").split("\n")[0] as string) as { from: number; anchor?: unknown };
      expect(header.from).toBe(1);
      expect(header.anchor).toBeUndefined();
      const v = await offline(file, "--json");
      expect(v.code).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, from: 1 });
    });
  });
});
