/**
 * What every CLI command needs: the data directory, how to reach NATS (the running daemon's URL
 * from `<data>/run/daemon.json`, or --nats), the admin credential, and one way to fail: a
 * one-line reason on stderr and a non-zero exit.
 */
import { existsSync } from "node:fs";
import { ErrorCode, MaxwellError } from "../protocol/mod.js";
import { AdminClient } from "../runtime/admin-client.js";
import { readJson, startEmbedded } from "../runtime/deployment.js";
import { connectNats, type NatsConnection } from "../transport/connection.js";
import { dataLayout, resolveDataDir, type DataLayout } from "../runtime/paths.js";
import type { DaemonInfo } from "../runtime/supervisor.js";

export interface GlobalOptions {
  data?: string;
  nats?: string;
  creds?: string;
}

export interface CliContext {
  layout: DataLayout;
  natsUrl(): string;
  adminCreds(): string;
  admin(): Promise<AdminClient>;
  daemon(): DaemonInfo | undefined;
  /**
   * An admin connection for reading the log. With no daemon running (and no --nats), starts the
   * data dir's nats-server just for this command, so the log can be read and verified offline.
   */
  connectAdmin(purpose: string, reconnect?: boolean): Promise<{ nc: NatsConnection; close: () => Promise<void> }>;
}

export function cliContext(opts: GlobalOptions): CliContext {
  const layout = dataLayout(resolveDataDir(opts.data));
  const daemon = () => readJson<DaemonInfo>(layout.daemon);
  const natsUrl = (): string => {
    const url = opts.nats ?? process.env["MAXWELL_NATS_URL"] ?? daemon()?.natsUrl;
    if (!url) {
      throw new MaxwellError(ErrorCode.Unavailable, `no running daemon for ${layout.root} (start one with 'maxwell up', or pass --nats URL)`);
    }
    return url;
  };
  const adminCreds = (): string => {
    const path = opts.creds ?? layout.credsOf("admin");
    if (!existsSync(path)) throw new MaxwellError(ErrorCode.NotFound, `admin credential ${path} not found (pass --creds FILE or --data DIR)`);
    return path;
  };
  const running = (): boolean => {
    const d = daemon();
    if (!d) return false;
    try {
      process.kill(d.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    layout,
    natsUrl,
    adminCreds,
    daemon,
    admin: () => AdminClient.connect(natsUrl(), adminCreds()),
    async connectAdmin(purpose, reconnect = false) {
      if (opts.nats || process.env["MAXWELL_NATS_URL"] || running()) {
        const nc = await connectNats({ servers: natsUrl(), creds: adminCreds(), name: `maxwell-cli:${purpose}`, reconnect });
        return { nc, close: () => nc.close() };
      }
      if (!existsSync(layout.natsConfig)) {
        throw new MaxwellError(ErrorCode.Unavailable, `no running daemon and no data in ${layout.root} (start one with 'maxwell up')`);
      }
      const embedded = await startEmbedded({ dataDir: layout.root });
      const nc = await connectNats({ servers: embedded.server.url, creds: adminCreds(), name: `maxwell-cli:${purpose}`, reconnect: false });
      return {
        nc,
        close: async () => {
          await nc.close();
          await embedded.server.stop();
        },
      };
    },
  };
}

/** Exit codes: 1 for a failed command, 2 for usage, 3 for a verification failure. */
export const ExitCode = { Failed: 1, Usage: 2, Verify: 3 } as const;

/** Prints a one-line reason and exits non-zero. */
export function fail(err: unknown, exitCode: number = ExitCode.Failed): never {
  const e = MaxwellError.from(err);
  const message = e.message.split("\n");
  process.stderr.write(`maxwell: ${message[0]}${e.code !== ErrorCode.Internal ? ` [${e.code}]` : ""}\n`);
  for (const line of message.slice(1)) process.stderr.write(`${line}\n`);
  process.exit(exitCode);
}

/** Parses a body argument: JSON when it parses, else the string itself. */
export function parseBody(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
