/**
 * A tool service on NATS: connects with the service's credential (which may only receive on
 * `mx.svc.<service>.>` and answer), joins the service's queue group so instances share the load,
 * and answers each request with the {@link ToolHost}'s reply, msgpack-encoded. Nothing a caller
 * sends can stop it: undecodable payloads, unknown operations and failing handlers are all answered
 * with a typed error.
 */
import type { Logger } from "../../src/runtime/logger.js";
import { decode, encode } from "../../src/protocol/codec.js";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { ServiceName, ServiceOp, serviceSubjects, type ServiceReply } from "../../src/protocol/services.js";
import { connectNats, type Msg, type NatsConnection, type Subscription } from "../../src/transport/connection.js";
import { ToolHost } from "./host.js";
import type { Tool } from "./tool.js";

export interface ToolServiceOptions {
  servers: string;
  /** Path of the service's creds file (`<data>/creds/svc-tools.creds`), or its content. */
  creds: string | Uint8Array;
  tools: readonly Tool[];
  log: Logger;
  /** The service name the kernel calls (default `tools`); a tool whose manifest names another service is refused. */
  service?: string;
  /** Longest a handler may run (default 60 s). */
  maxRunMs?: number;
  /** Replies of idempotent tools kept by effect id (default 10 000). */
  cacheSize?: number;
  /** Keep reconnecting when the server goes away (daemons: the default) or give up. */
  reconnect?: boolean;
}

/** The message limit assumed when the server did not state one (Maxwell's generated config sets 1 MiB). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** Hosts tools on NATS; see the module comment. */
export class ToolService {
  readonly host: ToolHost;
  readonly service: string;
  private readonly log: Logger;
  private nc: NatsConnection | undefined;
  private sub: Subscription | undefined;
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly opts: ToolServiceOptions) {
    this.service = opts.service ?? ServiceName.Tools;
    this.log = opts.log;
    for (const t of opts.tools) {
      const named = t.manifest.service;
      if (named !== undefined && named !== this.service) {
        throw new MaxwellError(ErrorCode.Conflict, `tool '${t.manifest.name}' belongs to service '${named}', not '${this.service}'`);
      }
    }
    this.host = new ToolHost({
      tools: opts.tools,
      service: this.service,
      log: opts.log,
      ...(opts.maxRunMs !== undefined ? { maxRunMs: opts.maxRunMs } : {}),
      ...(opts.cacheSize !== undefined ? { cacheSize: opts.cacheSize } : {}),
    });
  }

  /** Connects and starts answering; resolves once the subscription is registered at the server. */
  async start(): Promise<void> {
    const nc = await connectNats({
      servers: this.opts.servers,
      creds: this.opts.creds,
      name: serviceSubjects.identity(this.service),
      reconnect: this.opts.reconnect ?? true,
    });
    this.nc = nc;
    const all = serviceSubjects.all(this.service);
    const prefix = all.slice(0, -1); // "mx.svc.tools."
    this.sub = nc.subscribe(all, {
      queue: serviceSubjects.queue(this.service),
      callback: (err, msg) => {
        if (err) {
          this.log.error({ err: err.message }, "subscription failed");
          return;
        }
        const work = this.answer(msg.subject.startsWith(prefix) ? msg.subject.slice(prefix.length) : msg.subject, msg);
        this.pending.add(work);
        void work.finally(() => this.pending.delete(work));
      },
    });
    // A flush round-trip means the server has the subscription: calls made after start() reach us.
    await nc.flush();
    this.log.info({ service: this.service, subject: all, tools: this.host.manifests().map((m) => m.name) }, "tool service started");
  }

  /**
   * Stops taking calls, lets running ones finish (for at most `graceMs`, then aborts them; they
   * answer `unavailable`), and closes the connection.
   */
  async stop(graceMs = 5000): Promise<void> {
    const nc = this.nc;
    if (!nc) return;
    this.nc = undefined;
    try {
      await this.sub?.drain();
    } catch {
      // the connection may already be closed
    }
    if (this.pending.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.host.abortAll();
          resolve();
        }, graceMs);
      });
      await Promise.race([Promise.allSettled([...this.pending]), grace]);
      clearTimeout(timer);
      await Promise.allSettled([...this.pending]);
    }
    if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
    this.log.info("tool service stopped");
  }

  /** Resolves when the connection closes: with the error that closed it, if one did. */
  async closed(): Promise<void | Error> {
    if (!this.nc) return;
    return this.nc.closed();
  }

  private async answer(op: string, msg: Msg): Promise<void> {
    if (!msg.reply) {
      this.log.warn({ subject: msg.subject }, "request without a reply subject ignored");
      return;
    }
    let reply: ServiceReply;
    try {
      const payload = op === ServiceOp.Manifests && msg.data.length === 0 ? {} : decode(msg.data);
      reply = await this.host.handle(op, payload);
    } catch (err) {
      reply = { ok: false, error: MaxwellError.from(err).toWire() };
    }
    let data: Uint8Array;
    try {
      data = encode(reply);
    } catch (err) {
      this.log.error({ op, err: (err as Error).message }, "reply cannot be encoded");
      data = encode({ ok: false, error: { code: ErrorCode.Internal, message: "the tool's result cannot be encoded as msgpack" } });
    }
    const max = this.nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
    if (data.byteLength > max) {
      this.log.warn({ op, bytes: data.byteLength, max }, "reply too large");
      data = encode({ ok: false, error: { code: ErrorCode.Internal, message: `the tool's result is ${data.byteLength} bytes, over the ${max}-byte message limit; ask for less` } });
    }
    try {
      msg.respond(data);
    } catch (err) {
      this.log.error({ op, err: (err as Error).message }, "cannot answer");
    }
  }
}
