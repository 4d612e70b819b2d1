/**
 * A tool service whose tools answer from a script: a real NATS service on the tools service's
 * subjects, connected with the tools service's own credential, for tests of what the kernel does
 * around a tool call (authorization, holds, labels, recording). The real tool service is tested
 * on its own.
 */
import { decodeMap, encode, serviceSubjects, type ServiceCall, type ServiceReply, type ToolManifest } from "../../src/protocol/mod.js";
import { connectNats, type NatsConnection } from "../../src/transport/connection.js";
import type { Harness } from "./harness.js";

export interface ScriptedTools {
  calls: ServiceCall[];
  close(): Promise<void>;
}

/** A manifest for a scripted tool taking `{ text?: string }`-style open arguments. */
export function scriptedManifest(name: string, effect: ToolManifest["effect"]): ToolManifest {
  return { name, version: "1.0.0", description: `scripted ${effect} tool for tests`, input: { type: "object" }, effect };
}

export async function startScriptedTools(h: Harness, tools: Record<string, (args: unknown, call: ServiceCall) => unknown>): Promise<ScriptedTools> {
  const nc: NatsConnection = await connectNats({ servers: h.url, creds: h.layout.credsOf(serviceSubjects.identity("tools")), name: "scripted-tools" });
  const calls: ServiceCall[] = [];
  nc.subscribe(serviceSubjects.all("tools"), {
    queue: serviceSubjects.queue("tools"),
    callback: (_err, msg) => {
      const call = decodeMap(msg.data) as unknown as ServiceCall;
      calls.push(call);
      const run = tools[call.target];
      let reply: ServiceReply;
      try {
        reply = run ? { ok: true, result: run(call.args, call) } : { ok: false, error: { code: "not_found", message: `no tool ${call.target}` } };
      } catch (err) {
        reply = { ok: false, error: { code: "internal", message: (err as Error).message } };
      }
      msg.respond(encode(reply));
    },
  });
  await nc.flush();
  return { calls, close: () => nc.close() };
}
