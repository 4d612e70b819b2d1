/**
 * Entry point of the tool service: hosts the built-in tools (workspace files, HTTP fetch, the demo
 * database) and the tools of the configured MCP servers on `mx.svc.tools.>` with the service's own
 * credential, configured by `<data>/tools.json`. The kernel is its only caller.
 */
import { stopWhenOrphaned } from "../../src/runtime/orphan.js";
import { createLogger } from "../../src/runtime/logger.js";
import { serviceArgs } from "../../src/runtime/service-args.js";
import { dataLayout, resolveDataDir } from "../../src/runtime/paths.js";
import { ServiceName, serviceSubjects } from "../../src/protocol/services.js";
import { builtinTools, loadToolsConfig } from "./config.js";
import { startMcpServers, type McpBridge } from "./mcp.js";
import { ToolService } from "./service.js";

const HELP = `usage: maxwell-tools --nats URL [--data DIR] [--creds FILE] [--config FILE]

Runs Maxwell's tool service: file-read, file-list, file-write (a sandboxed workspace), http-fetch
(allowlisted hosts), the demo database (db-query, db-drop) and the tools of the MCP servers in the
configuration. Only the kernel calls it.

  --nats URL      NATS server (or MAXWELL_NATS_URL)
  --data DIR      data directory (or MAXWELL_HOME, else ./.maxwell)
  --creds FILE    credential (default <data>/creds/svc-tools.creds)
  --config FILE   configuration (default <data>/tools.json; see docs/tools.md)`;

const args = serviceArgs("maxwell-tools", HELP, ["config"]);
const servers = args.servers;
const log = createLogger("tools");
const dataDir = resolveDataDir(args.data);
const layout = dataLayout(dataDir);

let service: ToolService;
let mcp: McpBridge | undefined;
try {
  const config = loadToolsConfig(dataDir, args.extra.config);
  const builtins = await builtinTools(config);
  // A server that does not start is logged and skipped; the others and the built-ins still run.
  mcp = await startMcpServers(config.mcp, log, builtins.map((t) => t.manifest.name));
  service = new ToolService({
    servers,
    creds: args.creds ?? layout.credsOf(serviceSubjects.identity(ServiceName.Tools)),
    tools: [...builtins, ...mcp.tools],
    log,
    ...(config.maxRunMs !== undefined ? { maxRunMs: config.maxRunMs } : {}),
  });
  await service.start();
  log.info(
    { workspace: config.workspace.root, allow: config.fetch.allow, db: config.db.dir, dropEnabled: config.db.adminPasswordSha256 !== undefined, mcp: config.mcp.map((s) => s.name) },
    "configured",
  );
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : String(err) }, "tool service failed to start");
  await mcp?.close();
  process.exit(1);
}

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, "stopping");
  await service.stop();
  await mcp?.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
stopWhenOrphaned("maxwell-tools");
process.on("SIGINT", () => void shutdown("SIGINT"));

process.stdout.write("tools ready\n");
const closed = await service.closed();
if (!stopping) {
  log.error({ err: closed instanceof Error ? closed.message : undefined }, "NATS connection closed; exiting");
  await mcp?.close();
  process.exit(1);
}
