/** `maxwell status`: is the daemon up, where, and which durability guarantee is in force. */
import type { Command } from "commander";
import type { KernelStatus } from "../../runtime/admin.js";
import { isProcessAlive } from "../../runtime/supervisor.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

export function registerStatus(program: Command, globals: () => GlobalOptions): void {
  program
    .command("status")
    .description("report the daemon's health, the log head and the durability guarantee in force")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      try {
        const ctx = cliContext(globals());
        const daemon = ctx.daemon();
        const running = daemon !== undefined && isProcessAlive(daemon.pid);
        let kernel: KernelStatus | undefined;
        let kernelError: string | undefined;
        if (running || globals().nats) {
          try {
            const admin = await ctx.admin();
            try {
              kernel = await admin.status();
            } finally {
              await admin.close();
            }
          } catch (err) {
            kernelError = (err as Error).message;
          }
        }
        const healthy = running && kernel !== undefined;
        const report = {
          healthy,
          dataDir: ctx.layout.root,
          daemon: daemon && running ? daemon : undefined,
          kernel,
          ...(kernelError ? { kernelError } : {}),
        };
        if (opts.json) {
          process.stdout.write(JSON.stringify(report, null, 2) + "\n");
        } else if (!running) {
          process.stdout.write(`not running (data dir ${ctx.layout.root}); start it with: maxwell up\n`);
        } else if (daemon) {
          const agents = Object.entries(daemon.agents);
          process.stdout.write(
            [
              `${healthy ? "healthy" : "UNHEALTHY"}  daemon pid ${daemon.pid}, up since ${daemon.startedAt}`,
              `nats        ${daemon.natsUrl} (${daemon.embedded ? "embedded" : "external"}, nats-server ${daemon.server.version})`,
              `durability  ${daemon.durability.mode}: ${daemon.durability.guarantee}`,
              kernel
                ? `kernel      pid ${daemon.kernel.pid ?? "?"}, log head #${kernel.seq}, ${kernel.identities} identities, policy set ${kernel.policySet.slice(0, 12)}… (${kernel.policies.join(", ")}), last checkpoint #${kernel.lastCheckpoint}, ${kernel.pendingRequests} pending requests`
                : `kernel      not answering: ${kernelError ?? "unknown"}`,
              `agents      ${agents.length === 0 ? "none" : agents.map(([n, a]) => `${n}${isProcessAlive(a.pid) ? "" : " (down)"}${a.restarts ? ` restarts=${a.restarts}` : ""}`).join(", ")}`,
              `data        ${ctx.layout.root}`,
              "",
            ].join("\n"),
          );
        }
        process.exit(healthy ? 0 : 1);
      } catch (err) {
        fail(err);
      }
    });
}
