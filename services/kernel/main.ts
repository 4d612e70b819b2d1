/**
 * Entry point of the kernel service. `maxwell up` starts it with a data directory; it can also
 * run on its own against any NATS server given the kernel's credential and keys.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { dataLayout, packageRoot, resolveDataDir } from "../../src/runtime/paths.js";
import { stopWhenOrphaned } from "../../src/runtime/orphan.js";
import { createLogger } from "../../src/runtime/logger.js";
import { keyFiles } from "../../src/transport/identity.js";
import { Kernel } from "./kernel.js";
import { memoryRules } from "../../src/memory/ops.js";

const HELP = `usage: maxwell-kernel --nats URL [--data DIR] [--creds FILE] [--account-key FILE] [--kernel-key FILE] [--policies FILE]
                      [--approval-ttl-ms N] [--fork] [--snapshot-every N | --no-snapshots]

Runs Maxwell's kernel: the reference monitor and sole writer of the log.
Defaults come from the data directory (--data, MAXWELL_HOME, or ./.maxwell).

  --approval-ttl-ms N   how long an action held for a human waits before it expires (= deny);
                        default 900000 (15 minutes)
  --snapshot-every N    save the folded state every N events (default: 50000, or once per
                        remembered syscall and delivery when there are more) and at a clean
                        stop, under <data>/kernel/snapshots; a restart folds only the log after
                        the newest snapshot that checks out (signature, chain hash, bytes hash)
  --no-snapshots        take none and ignore any saved: fold the whole log at start
  --fork                take over a log another kernel key started (the sandbox of 'maxwell replay
                        fork'): append a kernel.fork event handing over to this kernel's key and
                        mint fresh credentials for its identities; without it such a log is refused`;

const { values } = parseArgs({
  options: {
    nats: { type: "string" },
    data: { type: "string" },
    creds: { type: "string" },
    "account-key": { type: "string" },
    "kernel-key": { type: "string" },
    policies: { type: "string" },
    "approval-ttl-ms": { type: "string" },
    "snapshot-every": { type: "string" },
    "no-snapshots": { type: "boolean" },
    fork: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  process.stdout.write(HELP + "\n");
  process.exit(0);
}
const log = createLogger("kernel");
const servers = values.nats ?? process.env["MAXWELL_NATS_URL"];
if (!servers) {
  process.stderr.write("maxwell-kernel: --nats URL is required\n" + HELP + "\n");
  process.exit(2);
}
const layout = dataLayout(resolveDataDir(values.data));
const keys = keyFiles(layout.keys);
const approvalTtlMs = values["approval-ttl-ms"] === undefined ? undefined : Number(values["approval-ttl-ms"]);
if (approvalTtlMs !== undefined && !(Number.isInteger(approvalTtlMs) && approvalTtlMs > 0)) {
  process.stderr.write("maxwell-kernel: --approval-ttl-ms must be a positive whole number of milliseconds\n");
  process.exit(2);
}
const snapshotEvery = values["snapshot-every"] === undefined ? undefined : Number(values["snapshot-every"]);
if (snapshotEvery !== undefined && !(Number.isInteger(snapshotEvery) && snapshotEvery > 0)) {
  process.stderr.write("maxwell-kernel: --snapshot-every must be a positive whole number of events\n");
  process.exit(2);
}
const defaultPolicyText = readFileSync(join(packageRoot, "services", "kernel", "default-policies.cedar"), "utf8");

const kernel = new Kernel({
  servers,
  creds: values.creds ?? layout.credsOf("kernel"),
  accountKey: values["account-key"] ?? keys.account,
  kernelKey: values["kernel-key"] ?? keys.kernel,
  policyFile: values.policies ?? layout.policies,
  defaultPolicyText,
  anchorFile: layout.anchor,
  operatorKey: keys.operator,
  systemKey: keys.system,
  revocationsFile: layout.revocations,
  dataDir: layout.root,
  memory: memoryRules,
  ...(approvalTtlMs ? { approvalTtlMs } : {}),
  ...(values.fork ? { fork: true } : {}),
  ...(values["no-snapshots"] ? {} : { snapshotDir: layout.kernelSnapshots }),
  ...(snapshotEvery ? { snapshotEvery } : {}),
  log,
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, "stopping");
  await kernel.stop();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
stopWhenOrphaned("maxwell-kernel");
process.on("SIGINT", () => void shutdown("SIGINT"));

try {
  await kernel.start();
  process.stdout.write("kernel ready\n");
  const closed = await kernel.closed();
  if (!stopping) {
    log.error({ err: closed instanceof Error ? closed.message : undefined }, "NATS connection closed; exiting");
    process.exit(1);
  }
} catch (err) {
  log.fatal({ err: err instanceof Error ? err.message : String(err) }, "kernel failed to start");
  process.exit(1);
}
