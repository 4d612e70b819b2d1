/**
 * `main(def)`: the usual way to start an agent process. Reads MAXWELL_AGENT, MAXWELL_NATS_URL
 * and MAXWELL_CREDS (set by `maxwell up`), runs the agent, and drains it on SIGTERM/SIGINT.
 * Under `maxwell replay` (MAXWELL_REPLAY=1) it returns at once: replay imports the agent's module
 * only for its default export, the definition, and nothing may connect.
 */
import type { AgentDefinition } from "./agent.js";
import { runAgent, type RunOptions } from "./runner.js";
import { stopWhenOrphaned } from "../runtime/orphan.js";

export async function main(def: AgentDefinition, opts: RunOptions = {}): Promise<void> {
  if (process.env["MAXWELL_REPLAY"] === "1") return;
  let agent;
  let stop = (): void => process.exit(1);
  stopWhenOrphaned(`agent ${process.env["MAXWELL_AGENT"] ?? ""}`.trim(), () => stop());
  try {
    agent = await runAgent(def, opts);
  } catch (err) {
    process.stderr.write(`agent failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  const running = agent;
  let stopping = false;
  stop = (): void => {
    if (stopping) return;
    stopping = true;
    void running.stop().then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await running.closed();
  if (!stopping) {
    process.stderr.write("agent lost its NATS connection; exiting\n");
    process.exit(1);
  }
}
