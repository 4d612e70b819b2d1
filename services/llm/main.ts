/**
 * Entry point of the model gateway service. `maxwell up` starts it with a data directory; it can
 * also run on its own against any NATS server given the gateway's credential.
 *
 * The API key comes from `ANTHROPIC_API_KEY` and nowhere else. Without one the gateway starts the
 * offline model in this process and sends every call there, and says so.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ServiceName, serviceSubjects } from "../../src/protocol/services.js";
import { stopWhenOrphaned } from "../../src/runtime/orphan.js";
import { createLogger } from "../../src/runtime/logger.js";
import { serviceArgs } from "../../src/runtime/service-args.js";
import { dataLayout, resolveDataDir } from "../../src/runtime/paths.js";
import { loadLlmConfig } from "./config.js";
import { LlmGateway } from "./gateway.js";
import { OFFLINE_MODEL, startOfflineModel, type OfflineModel } from "./offline-server.js";

const HELP = `usage: maxwell-llm --nats URL [--data DIR] [--creds FILE]

Runs Maxwell's model gateway: the only process that holds the model API key. It answers the
kernel's calls on ${serviceSubjects.all(ServiceName.Llm)} through the Anthropic Messages API.

  --nats URL     NATS server (or MAXWELL_NATS_URL)
  --data DIR     data directory (or MAXWELL_HOME, or ./.maxwell): creds/svc-llm.creds, llm.json
  --creds FILE   the gateway's NATS credential (default <data>/creds/svc-llm.creds)
  -h, --help     this text

The API key is read from ANTHROPIC_API_KEY only. Without it every call goes to the offline
model '${OFFLINE_MODEL}' running inside this process: nothing leaves the machine.
<data>/llm.json (optional): {"routes": [{"agent"?, "model"?, "to"}], "baseURL"?, "maxRetries"?, "timeoutMs"?, "maxRequestBytes"?}`;

const args = serviceArgs("maxwell-llm", HELP);
const servers = args.servers;
const log = createLogger("llm");
const layout = dataLayout(resolveDataDir(args.data));

let gateway: LlmGateway | undefined;
let offline: OfflineModel | undefined;
let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, "stopping");
  await gateway?.stop();
  await offline?.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
stopWhenOrphaned("maxwell-llm");
process.on("SIGINT", () => void shutdown("SIGINT"));

try {
  const config = loadLlmConfig(join(layout.root, "llm.json"));
  let apiKey = process.env["ANTHROPIC_API_KEY"] ?? "";
  let baseURL = config.baseURL;
  if (apiKey === "") {
    // A key of our own, so only this gateway can use the offline model's port.
    apiKey = `offline-${randomBytes(16).toString("hex")}`;
    offline = await startOfflineModel({ apiKey });
    baseURL = offline.url;
    log.warn(
      { model: OFFLINE_MODEL, url: offline.url, ...(config.baseURL ? { ignoredBaseURL: config.baseURL } : {}) },
      `ANTHROPIC_API_KEY is not set: every model call goes to the OFFLINE model '${OFFLINE_MODEL}' (not Claude); set ANTHROPIC_API_KEY to use Claude`,
    );
  }
  gateway = new LlmGateway({
    servers,
    creds: args.creds ?? layout.credsOf(serviceSubjects.identity(ServiceName.Llm)),
    apiKey,
    ...(baseURL ? { baseURL } : {}),
    routes: config.routes,
    maxRetries: config.maxRetries,
    timeoutMs: config.timeoutMs,
    maxRequestBytes: config.maxRequestBytes,
    log,
  });
  await gateway.start();
  process.stdout.write("llm ready\n");
  const closed = await gateway.closed();
  if (!stopping) {
    log.error({ err: closed instanceof Error ? closed.message : undefined }, "NATS connection closed; exiting");
    process.exit(1);
  }
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : String(err) }, "llm gateway failed to start");
  process.exit(1);
}
