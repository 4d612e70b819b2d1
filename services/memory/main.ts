/**
 * Entry point of the memory service: the store in `<data>/memory/`, the namespace keys in
 * `<data>/kernel/memkeys/`, calls from the kernel on `mx.svc.memory.>` with the service's own
 * credential, which may also read the log through the kernel (nothing else). Prints `memory ready`
 * once the store has caught up with the log and calls are being answered.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ErrorCode, MaxwellError, ServiceName, decodeMap, serviceSubjects, subjects } from "../../src/protocol/mod.js";
import { AdminClient } from "../../src/runtime/admin-client.js";
import { stopWhenOrphaned } from "../../src/runtime/orphan.js";
import { createLogger } from "../../src/runtime/logger.js";
import { serviceArgs } from "../../src/runtime/service-args.js";
import { dataLayout, resolveDataDir } from "../../src/runtime/paths.js";
import { NamespaceKeys } from "../../src/memory/keys.js";
import { CallClock, MemoryService, serveMemory } from "./service.js";
import { rebuildFromLog } from "./apply.js";
import { openMemoryStore, type MemoryStore } from "./store.js";

const HELP = `usage: maxwell-memory --nats URL [--data DIR] [--creds FILE]

Runs Maxwell's memory service: agent memory on LMDB, a projection of the log. It answers only the
kernel, rebuilds its store from the log when the store is missing or behind, and keeps catching up.

  --nats URL      NATS server (or MAXWELL_NATS_URL)
  --data DIR      data directory (or MAXWELL_HOME, else ./.maxwell); the store is <data>/memory
  --creds FILE    credential (default <data>/creds/svc-memory.creds)`;

/** How often the log is read for writes whose calls never came (and the store compacted). */
const CATCH_UP_MS = Number(process.env["MAXWELL_MEMORY_CATCH_UP_MS"] ?? 60_000);

const args = serviceArgs("maxwell-memory", HELP);
const servers = args.servers;
const log = createLogger("memory");
const layout = dataLayout(resolveDataDir(args.data));
const storeDir = join(layout.root, "memory");
const clock = new CallClock();
const keys = NamespaceKeys.forDataDir(layout.root);

/** Opens the store; one of another format (or from another log) is moved aside and rebuilt. */
function openStore(): MemoryStore {
  mkdirSync(storeDir, { recursive: true, mode: 0o700 });
  try {
    return openMemoryStore({ path: storeDir, now: clock.now });
  } catch (err) {
    const e = MaxwellError.from(err);
    if (e.code !== ErrorCode.Unavailable || !/format/.test(e.message)) throw err;
    const aside = `${storeDir}.old-${Date.now()}`;
    log.warn({ reason: e.message, movedTo: aside }, "memory store has another format; rebuilding it from the log");
    renameSync(storeDir, aside);
    mkdirSync(storeDir, { recursive: true, mode: 0o700 });
    return openMemoryStore({ path: storeDir, now: clock.now });
  }
}

const abort = new AbortController();
let stopping = false;
let timer: NodeJS.Timeout | undefined;
let server: ReturnType<typeof serveMemory> | undefined;
let admin: AdminClient | undefined;
let catchingUp: Promise<unknown> | undefined;

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  abort.abort();
  log.info({ signal }, "stopping");
  clearInterval(timer);
  try {
    await server?.drain();
    await catchingUp;
    await admin?.close();
  } catch (err) {
    log.warn({ err: MaxwellError.from(err).message }, "error while draining");
  }
  await store.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
stopWhenOrphaned("maxwell-memory");
process.on("SIGINT", () => void shutdown("SIGINT"));

let store: MemoryStore;
try {
  store = openStore();
} catch (err) {
  log.fatal({ err: MaxwellError.from(err).message, path: storeDir }, "cannot open the memory store");
  process.exit(1);
}
try {
  admin = await AdminClient.connect(servers, args.creds ?? layout.credsOf(serviceSubjects.identity(ServiceName.Memory)), {
    inboxPrefix: subjects.inboxPrefix(serviceSubjects.identity(ServiceName.Memory)),
    name: "maxwell-memory",
    reconnect: true,
  });
} catch (err) {
  log.fatal({ err: MaxwellError.from(err).message }, "memory service could not connect");
  await store.close();
  process.exit(1);
}

/** Reads from the log until the kernel answers (it may still be starting). */
async function firstPage(from: number): Promise<void> {
  for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
    try {
      await client.read({ from, max: 1 });
      return;
    } catch (err) {
      if (abort.signal.aborted) throw err;
      log.warn({ err: MaxwellError.from(err).message, retryInMs: delay }, "cannot read the log through the kernel yet");
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** The id of the log's first event, which tells one log from another. */
async function logIdentity(): Promise<string | undefined> {
  const { entries } = await client.read({ from: 1, max: 1 });
  const first = entries[0];
  if (!first || first.seq !== 1) return undefined;
  const id = decodeMap(first.data)["id"];
  return typeof id === "string" ? id : undefined;
}

/** `replay state` for memory: the log up to `upTo` rebuilt into a scratch store beside the live one. */
async function rebuildDigest(upTo: number, at: number): Promise<{ digest: string; applied: number; ms: number }> {
  const dir = mkdtempSync(join(layout.root, "memory-verify-"));
  const scratchClock = new CallClock();
  const scratch = openMemoryStore({ path: dir, now: scratchClock.now });
  try {
    async function* upToSeq(): AsyncGenerator<{ seq: number; data: Uint8Array }> {
      if (upTo < 1) return;
      for await (const entry of client.entries(1, { signal: abort.signal })) {
        if (entry.seq > upTo) return;
        yield entry;
        if (entry.seq === upTo) return;
      }
    }
    const report = await rebuildFromLog({ store: scratch, keys, entries: upToSeq(), signal: abort.signal });
    scratchClock.set(at);
    return { digest: scratch.digest({ at }), applied: report.applied, ms: Math.round(report.ms) };
  } finally {
    await scratch.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const service = (): MemoryService => new MemoryService({ store, keys, clock, log, rebuildDigest });
let memory = service();
const client = admin;

/** One catch-up pass (never two at once); failures are logged, the next pass tries again. */
function catchUp(): Promise<unknown> {
  catchingUp ??= memory
    .catchUp((from) => client.entries(from, { signal: abort.signal }), abort.signal)
    .then(async (report) => {
      if (report.applied > 0) log.info(report, "applied memory writes from the log");
      await memory.compact();
    })
    .catch((err: unknown) => log.warn({ err: MaxwellError.from(err).message }, "catching up with the log failed"))
    .finally(() => (catchingUp = undefined));
  return catchingUp;
}
try {
  await firstPage(1);
  const logId = await logIdentity();
  const known = store.fact("log");
  if (known !== undefined && logId !== undefined && known !== logId) {
    const aside = `${storeDir}.other-log-${Date.now()}`;
    log.warn({ storeLog: known, log: logId, movedTo: aside }, "memory store was built from another log; rebuilding it");
    await store.close();
    renameSync(storeDir, aside);
    store = openStore();
    memory = service();
  }
  if (logId !== undefined && store.fact("log") === undefined) await store.setFact("log", logId);
  // Calls that come while catching up wait: they are answered after it, in the order they came.
  server = serveMemory(client.nc, memory, log);
  const t0 = performance.now();
  const report = await memory.catchUp((from) => client.entries(from, { signal: abort.signal }), abort.signal);
  log.info({ ...report, ms: Math.round(performance.now() - t0), appliedSeq: store.appliedSeq(), resumeSeq: store.resumeSeq() }, "memory store caught up with the log");
  server.release();
  timer = setInterval(() => void catchUp(), CATCH_UP_MS);
  timer.unref();
  process.stdout.write("memory ready\n");
  const closed = await client.nc.closed();
  if (!stopping) {
    log.error({ err: closed instanceof Error ? closed.message : undefined }, "NATS connection closed; exiting");
    await store.close();
    process.exit(1);
  }
} catch (err) {
  if (stopping) await new Promise(() => undefined);
  log.fatal({ err: MaxwellError.from(err).message }, "memory service failed to start");
  await store.close().catch(() => undefined);
  process.exit(1);
}
