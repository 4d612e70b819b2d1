import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defineAgent, MaxwellError, type Message } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

describe("kernel-mediated messaging", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it("delivers a request from a coordinator to a worker and the worker's answer back", async () => {
    const coord = await h.register("coord", "agent", ["coordinators"]);
    const worker = await h.register("worker", "agent", ["workers"]);
    const seen: Message[] = [];
    await h.agent(
      defineAgent({
        name: "worker",
        onMessage(msg) {
          seen.push(msg);
          return { doubled: (msg.body as { n: number }).n * 2 };
        },
      }),
      worker.creds,
    );
    let answer: unknown;
    const done = new Promise<void>((resolve, reject) => {
      void h
        .agent(
          defineAgent({
            name: "coord",
            async onStart(ctx) {
              try {
                answer = await ctx.request("worker", { n: 21 });
                resolve();
              } catch (err) {
                reject(err as Error);
              }
            },
            onMessage() {},
          }),
          coord.creds,
        )
        .catch(reject);
    });
    await done;
    expect(answer).toEqual({ doubled: 42 });
    expect(seen).toHaveLength(1);
    expect(seen[0]?.from).toBe("coord");
    expect(seen[0]?.principal).toBe("coord");
  });

  it("denies a send no policy permits, with a typed forbidden error", async () => {
    const rogue = await h.register("rogue", "agent");
    let error: unknown;
    await h.agent(
      defineAgent({
        name: "rogue",
        async onStart(ctx) {
          try {
            await ctx.send("worker", "let me in");
          } catch (err) {
            error = err;
          }
        },
        onMessage() {},
      }),
      rogue.creds,
    );
    await until(() => error !== undefined, "the denial");
    expect(error).toBeInstanceOf(MaxwellError);
    expect((error as MaxwellError).code).toBe("forbidden");
    expect((error as MaxwellError).message).toMatch(/default deny/);
  });
});

describe("telemetry", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it("carries the W3C traceparent of the message's trace on the delivery to the agent", async () => {
    const { connectNats } = await import("../../src/transport/connection.js");
    const { decodeMap, subjects, parseTraceparent, encode, SyscallOp } = await import("../../src/protocol/mod.js");
    const alice = await h.register("alice", "principal");
    const target = await h.register("target", "agent");
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(target.creds), name: "t", inboxPrefix: subjects.inboxPrefix("target") });
    const got: Array<{ trace: string; header: string | undefined }> = [];
    const sub = nc.subscribe(subjects.delivery("target"), {
      callback: (_err, m) => {
        const e = decodeMap(m.data);
        got.push({ trace: String(e["trace"]), header: m.headers?.get("traceparent") });
      },
    });
    await nc.flush();
    const pc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(alice.creds), name: "a", inboxPrefix: subjects.inboxPrefix("alice") });
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const { headers } = await import("@nats-io/transport-node");
    const hdr = headers();
    hdr.set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`);
    const reply = decodeMap((await pc.request(subjects.syscall("alice", SyscallOp.Send), encode({ id: "t1:0", to: "target", body: 1 }), { timeout: 5000, headers: hdr })).data);
    expect(reply["ok"]).toBe(true);
    await until(() => got.length === 1, "the delivery");
    expect(got[0]?.trace).toBe(traceId);
    expect(parseTraceparent(got[0]?.header)?.traceId).toBe(traceId);
    sub.unsubscribe();
    await nc.close();
    await pc.close();
  });
});
