/**
 * Authority across agents, through the SDK and a real kernel: an agent working for a principal
 * can do only what both it and the principal may, and a scope handed down with a request only
 * narrows what the recipient may do.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SyscallOp, newScope, subjects, syscallId } from "../../src/protocol/mod.js";
import { packageRoot } from "../../src/runtime/paths.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import { SyscallClient } from "../../src/sdk/syscalls.js";
import { defineAgent, MaxwellError } from "../../src/sdk/mod.js";
import { startHarness, until, type Harness } from "../support/harness.js";

const POLICIES = `${readFileSync(join(packageRoot, "services", "kernel", "default-policies.cedar"), "utf8")}
@id("workers-to-workers")
permit (principal in Maxwell::Group::"workers", action in [Maxwell::Action::"message.send", Maxwell::Action::"message.request"], resource in Maxwell::Group::"workers");

@id("bob-may-not-request-workers")
forbid (principal == Maxwell::Principal::"bob", action == Maxwell::Action::"message.request", resource in Maxwell::Group::"workers");
`;

describe("delegation", () => {
  let h: Harness;
  const connections: NatsConnection[] = [];
  const coordResults: Array<{ from: string; outcome: unknown }> = [];
  const workerTried: Array<{ request: string; send: string }> = [];

  async function asPrincipal(name: string, creds: string): Promise<SyscallClient> {
    const nc = await connectNats({ servers: h.url, creds: new TextEncoder().encode(creds), name, inboxPrefix: subjects.inboxPrefix(name) });
    connections.push(nc);
    return new SyscallClient(nc, name);
  }

  beforeAll(async () => {
    h = await startHarness({ policies: POLICIES });
    const coord = await h.register("coord", "agent", ["coordinators"]);
    const worker = await h.register("worker", "agent", ["workers"]);
    const helper = await h.register("helper", "agent", ["workers"]);
    await h.agent(defineAgent({ onMessage: () => "helped" }), helper.creds, "helper");
    const code = (err: unknown): string => (err instanceof MaxwellError ? err.code : String(err));
    await h.agent(
      defineAgent({
        async onMessage(msg, ctx) {
          const tried = { request: "", send: "" };
          await ctx.request("helper", "please").then(() => (tried.request = "allow"), (err: unknown) => (tried.request = code(err)));
          await ctx.send("helper", "fyi").then(() => (tried.send = "allow"), (err: unknown) => (tried.send = code(err)));
          workerTried.push(tried);
          return tried;
        },
      }),
      worker.creds,
      "worker",
    );
    await h.agent(
      defineAgent({
        async onMessage(msg, ctx) {
          const outcome = await ctx.request("worker", msg.body, { scope: { actions: ["message.send"] } }).catch((err: unknown) => code(err));
          coordResults.push({ from: msg.principal, outcome });
        },
      }),
      coord.creds,
      "coord",
    );
  });
  afterAll(async () => {
    for (const nc of connections) await nc.close();
    await h?.close();
  });

  it("lets the recipient of a scoped request do only what the scope names", async () => {
    const alice = await asPrincipal("alice", (await h.register("alice", "principal")).creds);
    await alice.call(SyscallOp.Send, { id: syscallId(newScope(), 0), to: "coord", body: "job" });
    await until(() => coordResults.length === 1, "alice's job");
    expect(workerTried).toEqual([{ request: "forbidden", send: "allow" }]);
    expect(coordResults[0]).toEqual({ from: "alice", outcome: { request: "forbidden", send: "allow" } });
  });

  it("refuses an agent working for a principal what that principal may not do", async () => {
    const bob = await asPrincipal("bob", (await h.register("bob", "principal")).creds);
    await bob.call(SyscallOp.Send, { id: syscallId(newScope(), 0), to: "coord", body: "job" });
    await until(() => coordResults.length === 2, "bob's job");
    expect(coordResults[1]).toEqual({ from: "bob", outcome: "forbidden" });
    expect(workerTried).toHaveLength(1);
  });
});
