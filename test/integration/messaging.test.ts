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
