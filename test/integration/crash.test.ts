/**
 * Nothing accepted is lost (promise 6): across a kill -9 of the kernel in the middle of a stream
 * of sends, and of an agent in the middle of a handler, every message is delivered and handled
 * effectively once, and no effect is recorded twice.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, decodeMap, type LogEvent, type MessageEvent } from "../../src/protocol/mod.js";
import { connectNats, jetstream, jetstreamManager, readLog } from "../../src/transport/connection.js";
import { packageRoot } from "../../src/runtime/paths.js";
import { writeSecret } from "../../src/transport/identity.js";
import { defineAgent, type Message } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

async function logEvents(h: Harness): Promise<LogEvent[]> {
  const nc = await connectNats({ servers: h.url, creds: h.layout.credsOf("kernel"), name: "test-reader", reconnect: false });
  try {
    const out: LogEvent[] = [];
    for await (const e of readLog(jetstream(nc), await jetstreamManager(nc))) out.push(decodeMap(e.data) as unknown as LogEvent);
    return out;
  } finally {
    await nc.close();
  }
}

describe("crash safety", () => {
  let h: Harness;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await h?.close();
  });

  /**
   * Streams N sequential sends from one agent to another, inflicts `crash` once a third has
   * arrived, and checks every message was handled exactly once and logged exactly once.
   */
  async function streamThroughCrash(prefix: string, N: number, crash: () => Promise<void>): Promise<void> {
    const sender = await h.register(`${prefix}-sender`, "agent", ["coordinators"]);
    const receiver = await h.register(`${prefix}-receiver`, "agent", ["workers"]);
    const handled = new Map<number, number>();
    await h.agent(
      defineAgent({
        onMessage(msg: Message) {
          const i = (msg.body as { i: number }).i;
          handled.set(i, (handled.get(i) ?? 0) + 1);
        },
      }),
      receiver.creds,
      `${prefix}-receiver`,
    );
    let sent = 0;
    let sendError: unknown;
    await h.agent(
      defineAgent({
        onStart(ctx) {
          // Not awaited: the stream runs while the test crashes and restarts things.
          void (async () => {
            for (let i = 0; i < N; i++) {
              await ctx.send(`${prefix}-receiver`, { i });
              sent += 1;
            }
          })().catch((err: unknown) => {
            sendError = err;
          });
        },
        onMessage() {},
      }),
      sender.creds,
      `${prefix}-sender`,
    );
    await until(() => handled.size >= N / 3, "a third of the stream to arrive");
    expect(sent).toBeLessThan(N);
    await crash();
    // Both: the last delivery can be handled before the sender's last send has been answered.
    await until(() => (handled.size === N && sent === N) || sendError !== undefined, "every message sent and handled after the restart", 45_000);
    expect(sendError).toBeUndefined();
    expect(sent).toBe(N);
    for (let i = 0; i < N; i++) expect(handled.get(i), `message ${i} handled once`).toBe(1);

    const messages = (await logEvents(h)).filter((e): e is MessageEvent => e.type === EventType.Message && e.actor === `${prefix}-sender`);
    expect(messages).toHaveLength(N);
    expect(new Set(messages.map((m) => (m.body as { i: number }).i)).size).toBe(N);
  }

  it("loses and duplicates nothing when the kernel is killed -9 in the middle of a stream of sends", async () => {
    await streamThroughCrash("k", 300, async () => {
      await h.killKernel("SIGKILL");
      await h.startKernel();
    });
  });

  it("loses and duplicates nothing when nats-server is killed -9 in the middle of a stream of sends", async () => {
    await streamThroughCrash("n", 200, () => h.crashServer());
  });

  it("does not repeat an agent's effect when it is killed -9 in the middle of a handler", async () => {
    const asker = await h.register("asker", "agent", ["coordinators"]);
    const crashy = await h.register("crashy", "agent", ["workers", "coordinators"]);
    const sink = await h.register("sink", "agent", ["workers"]);
    const atSink: Message[] = [];
    await h.agent(defineAgent({ onMessage: (m: Message) => void atSink.push(m) }), sink.creds, "sink");

    const credsPath = join(h.dir, "creds", "crashy.creds");
    writeSecret(credsPath, crashy.creds);
    const marker = join(h.dir, "crashy.crashed");
    const start = (): ChildProcess => {
      const child = spawn(process.execPath, ["--import", "tsx", join(packageRoot, "test", "support", "crashy-agent.ts")], {
        cwd: packageRoot,
        stdio: "ignore",
        env: { ...process.env, MAXWELL_AGENT: "crashy", MAXWELL_NATS_URL: h.url, MAXWELL_CREDS: credsPath, CRASH_MARKER: marker, MAXWELL_LOG_LEVEL: "silent" },
      });
      children.push(child);
      return child;
    };
    const first = start();
    // Play supervisor: when the first process dies, start the agent again.
    const firstExit = new Promise<NodeJS.Signals | null>((r) =>
      first.once("exit", (_code, signal) => {
        start();
        r(signal);
      }),
    );

    let answer: unknown;
    await h.agent(
      defineAgent({
        async onStart(ctx) {
          answer = await ctx.request("crashy", "job-1", { timeoutMs: 40_000 });
        },
        onMessage() {},
      }),
      asker.creds,
      "asker",
    );
    // onStart resolves only after the answer: crashy died once in the handler and was restarted.
    expect(answer).toEqual({ handled: "job-1" });
    expect(await firstExit).toBe("SIGKILL");
    expect(atSink).toHaveLength(1);
    expect(atSink[0]?.body).toMatchObject({ from: "crashy", about: "job-1" });

    const effects = (await logEvents(h)).filter((e) => e.type === EventType.Message && e.actor === "crashy");
    expect(effects).toHaveLength(1);
  }, 60_000);
});
