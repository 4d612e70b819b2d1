/**
 * What every CLI command needs: the data directory, how to reach NATS (the running daemon's URL
 * from `<data>/run/daemon.json`, or --nats), the admin credential, and one way to fail: a
 * one-line reason on stderr and a non-zero exit.
 */
import { existsSync } from "node:fs";
import { ErrorCode, LOG_STREAM, MaxwellError, type StoredEntry } from "../protocol/mod.js";
import { AdminClient } from "../runtime/admin-client.js";
import { readJson, startEmbedded } from "../runtime/deployment.js";
import { connectNats, jetstream, jetstreamManager, readEntriesAt, readLog } from "../transport/connection.js";
import { dataLayout, resolveDataDir, type DataLayout } from "../runtime/paths.js";
import { isProcessAlive, type DaemonInfo } from "../runtime/supervisor.js";

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
   * The log, for reading. Through the running kernel (admin credential) when a daemon is up or
   * --nats is given; otherwise the data dir's nats-server is started just for this command and
   * read with the kernel's credential (no agent can be connected then).
   */
  openLog(purpose: string): Promise<LogSource>;
}

/** Stored entries of the log, in order. */
export interface LogSource {
  entries(opts: { from: number; follow: boolean; signal?: AbortSignal }): AsyncIterable<StoredEntry>;
  /** The entries stored at `seqs` (direct gets), ascending; those the log does not hold are left out. */
  entriesAt(seqs: readonly number[]): Promise<StoredEntry[]>;
  /** The stream's last sequence as the server reports it. */
  lastSeq(): Promise<number>;
  close(): Promise<void>;
}

/** How often `log --follow` asks the kernel for new entries when there were none. */
const FOLLOW_POLL_MS = 300;

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
  const running = (): boolean => isProcessAlive(daemon()?.pid);
  return {
    layout,
    natsUrl,
    adminCreds,
    daemon,
    admin: () => AdminClient.connect(natsUrl(), adminCreds()),
    async openLog(purpose) {
      if (opts.nats || process.env["MAXWELL_NATS_URL"] || running()) {
        const admin = await AdminClient.connect(natsUrl(), adminCreds(), { reconnect: true });
        return {
          entries: ({ from, follow, signal }) => admin.entries(from, { follow, pollMs: FOLLOW_POLL_MS, ...(signal ? { signal } : {}) }),
          entriesAt: (seqs) => admin.readAt(seqs),
          lastSeq: async () => (await admin.read({ from: Number.MAX_SAFE_INTEGER, max: 1 })).lastSeq,
          close: () => admin.close(),
        };
      }
      if (!existsSync(layout.natsConfig)) {
        throw new MaxwellError(ErrorCode.Unavailable, `no running daemon and no data in ${layout.root} (start one with 'maxwell up')`);
      }
      const embedded = await startEmbedded({ dataDir: layout.root });
      let nc;
      let jsm;
      try {
        nc = await connectNats({ servers: embedded.server.url, creds: layout.credsOf("kernel"), name: `maxwell-cli:${purpose}`, reconnect: false });
        jsm = await jetstreamManager(nc);
      } catch (err) {
        // Do not leave the private server behind when the command fails here.
        await nc?.close().catch(() => undefined);
        await embedded.server.stop();
        throw err;
      }
      const js = jetstream(nc);
      const conn = nc;
      return {
        entries: ({ from, follow, signal }) => readLog(js, jsm, { fromSeq: from, follow, ...(signal ? { signal } : {}) }),
        entriesAt: (seqs) => readEntriesAt(jsm, seqs),
        lastSeq: async () => (await jsm.streams.info(LOG_STREAM)).state.last_seq,
        close: async () => {
          await conn.close();
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
