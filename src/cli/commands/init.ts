/**
 * `maxwell init`: create keys, the kernel's and admin's credentials, and a nats-server config,
 * without starting anything. For running NATS yourself (docker-compose, a cluster).
 */
import { writeFileSync, mkdirSync, chmodSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { ErrorCode, MaxwellError } from "../../protocol/mod.js";
import { prepareDataDir } from "../../runtime/deployment.js";
import { findNatsServer, parseServerVersion, serverVersionOf } from "../../transport/nats-server.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

export function registerInit(program: Command, globals: () => GlobalOptions): void {
  program
    .command("init")
    .description("create keys, credentials and a nats-server config for running NATS yourself")
    .option("--nats-config <file>", "where to write the server config (default: <data>/nats/nats.conf)")
    .option("--store-dir <dir>", "JetStream store dir as the server sees it")
    .option("--listen <host:port>", "where the server listens", "127.0.0.1:4222")
    .option("--server-version <v>", "nats-server version the config is for (default: the local binary's, else 2.10.0)")
    .option("--strict", "fsync every write (nats-server >= 2.10)")
    .action(async (opts: { natsConfig?: string; storeDir?: string; listen: string; serverVersion?: string; strict?: boolean }) => {
      try {
        const ctx = cliContext(globals());
        const m = /^(.+):(\d+)$/.exec(opts.listen);
        if (!m) throw new MaxwellError(ErrorCode.BadRequest, `--listen must be host:port, not ${opts.listen}`);
        let version;
        if (opts.serverVersion) version = parseServerVersion(opts.serverVersion);
        else {
          try {
            version = serverVersionOf(findNatsServer());
          } catch {
            version = parseServerVersion("2.10.0");
          }
        }
        const { layout, configText } = await prepareDataDir({
          dataDir: ctx.layout.root,
          host: m[1] as string,
          port: Number(m[2]),
          strict: Boolean(opts.strict),
          version,
          ...(opts.storeDir ? { storeDir: opts.storeDir } : {}),
        });
        const configPath = resolve(opts.natsConfig ?? layout.natsConfig);
        mkdirSync(dirname(configPath), { recursive: true });
        writeFileSync(configPath, configText, { mode: 0o644 });
        chmodSync(configPath, 0o644);
        process.stdout.write(`keys and creds in ${layout.root}\nnats-server config: ${configPath}\nthen: maxwell --data ${layout.root} --nats nats://HOST:${m[2]} up\n`);
      } catch (err) {
        fail(err);
      }
    });
}
