/** `maxwell up`: the daemon. */
import { dirname, resolve } from "node:path";
import { existsSync } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, MaxwellError, SyscallOp, newScope, subjects, syscallId } from "../../protocol/mod.js";
import { connectNats } from "../../transport/connection.js";
import { createLogger } from "../../runtime/logger.js";
import { Supervisor, demoConfig, readDaemonConfig, type DaemonConfig } from "../../runtime/supervisor.js";
import { prepareDemo } from "../../runtime/demo.js";
import { SyscallClient } from "../../sdk/syscalls.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

interface UpOptions {
  demo?: boolean;
  config?: string;
  host?: string;
  port?: string;
  strict?: boolean;
}

const DEMO_TASKS = [
  { task: "shout", items: ["hello", "from", "maxwell"] },
  { task: "shout", items: ["every", "message", "is", "logged"] },
];

export function registerUp(program: Command, globals: () => GlobalOptions): void {
  program
    .command("up")
    .description("start the daemon: nats-server (unless --nats), the kernel and the configured agents")
    .option("--demo", "run the demo: a coordinator, two workers and a rogue agent, with work from principal alice")
    .option("--config <file>", "agents and principals to run (default: <data>/maxwell.json if present)")
    .option("--host <host>", "address the embedded nats-server listens on", "127.0.0.1")
    .option("--port <port>", "port of the embedded nats-server (default: a free one)")
    .option("--strict", "fsync every log write (needs nats-server >= 2.10)")
    .addHelpText("after", "\nExternal NATS: maxwell --nats URL [--creds KERNEL_CREDS] up   (keys from 'maxwell init' in --data)")
    .action(async (opts: UpOptions) => {
      try {
        await up(globals(), opts);
      } catch (err) {
        fail(err);
      }
    });
}

async function up(g: GlobalOptions, opts: UpOptions): Promise<void> {
  const ctx = cliContext(g);
  const log = createLogger("maxwell");
  let config: DaemonConfig | undefined;
  let configDir: string | undefined;
  const configPath = opts.config ?? (existsSync(ctx.layout.config) ? ctx.layout.config : undefined);
  if (opts.demo) {
    config = demoConfig();
    prepareDemo(ctx.layout);
  } else if (configPath) {
    config = readDaemonConfig(configPath);
    configDir = dirname(resolve(configPath));
  }
  const port = opts.port !== undefined ? Number(opts.port) : undefined;
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new MaxwellError(ErrorCode.BadRequest, `--port must be a port number, not ${opts.port}`);
  }
  const supervisor = new Supervisor({
    dataDir: ctx.layout.root,
    ...(config ? { config } : {}),
    ...(configDir ? { configDir } : {}),
    ...(opts.host ? { host: opts.host } : {}),
    ...(port !== undefined ? { port } : {}),
    strict: Boolean(opts.strict),
    ...(g.nats ? { external: { url: g.nats, creds: g.creds ?? ctx.layout.credsOf("kernel") } } : {}),
    log,
  });
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    void supervisor.stop().then(
      () => {
        process.stdout.write("maxwell stopped\n");
        process.exit(0);
      },
      (err: unknown) => fail(err),
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  let info;
  try {
    info = await supervisor.start();
  } catch (err) {
    await supervisor.stop().catch(() => undefined);
    throw err;
  }
  const agents = Object.keys(info.agents).length;
  process.stdout.write(
    `maxwell ready  nats=${info.natsUrl}  data=${info.dataDir}  kernel=pid ${info.kernel.pid ?? "?"}  agents=${agents}  durability=${info.durability.mode}\n`,
  );
  if (opts.demo) {
    process.stdout.write(
      [
        "  demo: alice gives the coordinator work; it fans out to worker-1 and worker-2; rogue tries what no policy permits.",
        "  incident: alice asks ops to tidy up; ops finds the DB admin token in a runbook and tries to drop 'customers'.",
        "            The token comes back redacted, and the drop is held for a human:",
        "            npx maxwell approvals      then   npx maxwell deny <id> --as carol --reason 'not in a cleanup'",
        `  model calls:    ${process.env["ANTHROPIC_API_KEY"] ? "Claude (ANTHROPIC_API_KEY is set; the gateway alone holds it)" : "the offline model 'maxwell-offline' (no ANTHROPIC_API_KEY set)"}`,
        "  watch the log:  npx maxwell log --follow        (in another terminal, same folder)",
        `  send work:      npx maxwell send --as alice --to coordinator '{"task":"shout","items":["a","b","c"]}'`,
        "  check it:       npx maxwell verify",
        "",
      ].join("\n"),
    );
    await sendDemoWork(info.natsUrl, ctx.layout.credsOf("alice"));
  }
}

async function sendDemoWork(url: string, creds: string): Promise<void> {
  const nc = await connectNats({ servers: url, creds, name: "maxwell-demo:alice", inboxPrefix: subjects.inboxPrefix("alice") });
  const client = new SyscallClient(nc, "alice");
  const scope = `demo-${newScope()}`;
  let step = 0;
  for (const task of DEMO_TASKS) {
    await client.call(SyscallOp.Send, { id: syscallId(scope, step++), to: "coordinator", body: task });
  }
  await client.call(SyscallOp.Send, { id: syscallId(scope, step++), to: "ops", body: { task: "tidy up stale tables", table: "customers" } });
  await nc.close();
}
