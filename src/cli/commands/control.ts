/** `maxwell pause|resume|quarantine|release|kill AGENT`: an operator's control over a running agent. */
import type { Command } from "commander";
import { AgentState } from "../../protocol/mod.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

const COMMANDS = [
  { name: "pause", state: AgentState.Paused, about: "stop accepting from and delivering to AGENT; its queued work is kept" },
  { name: "resume", state: AgentState.Running, about: "accept from and deliver to AGENT again (delivers what was held)" },
  { name: "quarantine", state: AgentState.Quarantined, about: "let AGENT run but deny every action it takes" },
  { name: "release", state: AgentState.Running, about: "lift a quarantine" },
  { name: "kill", state: AgentState.Killed, about: "revoke AGENT's credential at the server and fail the requests waiting on it (final)" },
] as const;

export function registerControl(program: Command, globals: () => GlobalOptions): void {
  for (const c of COMMANDS) {
    program
      .command(`${c.name} <agent>`)
      .description(c.about)
      .option("--reason <text>", "why (recorded in the log)")
      .action(async (agent: string, opts: { reason?: string }) => {
        try {
          const admin = await cliContext(globals()).admin();
          try {
            const r = await admin.control({ agent, state: c.state, ...(opts.reason ? { reason: opts.reason } : {}) });
            process.stdout.write(`${r.agent}: ${r.was} → ${r.state} (logged at #${r.seq})\n`);
          } finally {
            await admin.close();
          }
        } catch (err) {
          fail(err);
        }
      });
  }
}
