/**
 * The part of a tool service that does not know about NATS: given a decoded request, find the
 * tool, refuse a call whose pinned manifest hash is not the hosted one, check the arguments, run
 * the handler under the call's deadline, and build the reply. It never throws: every failure is a
 * `{ ok: false, error }` reply with a code from the closed set.
 */
import type { Logger } from "../../src/runtime/logger.js";
import { ErrorCode, MaxwellError, type WireError } from "../../src/protocol/errors.js";
import type { EventId, TraceId } from "../../src/protocol/ids.js";
import { compileArgsValidator, compileResultValidator, manifestHash, type ArgsValidator } from "../../src/protocol/manifest.js";
import { ServiceOp, joinLabels, type Labels, type ServiceCall, type ServiceReply, type ToolManifest } from "../../src/protocol/services.js";
import type { Tool, ToolContext } from "./tool.js";

export interface ToolHostOptions {
  tools: readonly Tool[];
  /**
   * The service these tools are hosted in. A manifest without `service` is listed and hashed with
   * this one filled in, so the hash the kernel pins (it records the service it listed a manifest
   * from) is the hash this host checks.
   */
  service?: string;
  log: Logger;
  /** Longest a handler may run, whatever deadline the call carries (default 60 s). */
  maxRunMs?: number;
  /** Replies of idempotent tools kept by effect id (default 10 000). */
  cacheSize?: number;
  /** The clock deadlines are measured against (ms since the epoch). */
  now?: () => number;
}

interface Hosted {
  tool: Tool;
  hash: string;
  checkArgs: ArgsValidator;
  checkResult: ArgsValidator | undefined;
}

/** Codes that say "this attempt did not finish", so a retry must run again rather than be answered from the cache. */
const TRANSIENT: ReadonlySet<string> = new Set([ErrorCode.Timeout, ErrorCode.Unavailable, ErrorCode.Internal]);

/** Hosts a set of tools; see the module comment. */
export class ToolHost {
  private readonly tools = new Map<string, Hosted>();
  private readonly log: Logger;
  private readonly maxRunMs: number;
  private readonly cacheSize: number;
  private readonly now: () => number;
  /** Replies (or replies in flight) of idempotent tools, oldest first. */
  private readonly replies = new Map<string, Promise<ServiceReply>>();
  private readonly running = new Set<AbortController>();

  constructor(opts: ToolHostOptions) {
    this.log = opts.log;
    this.maxRunMs = opts.maxRunMs ?? 60_000;
    this.cacheSize = opts.cacheSize ?? 10_000;
    this.now = opts.now ?? Date.now;
    for (const given of opts.tools) {
      const name = given.manifest.name;
      if (this.tools.has(name)) throw new MaxwellError(ErrorCode.Conflict, `two tools are named '${name}'`);
      const tool = opts.service !== undefined && given.manifest.service === undefined ? { ...given, manifest: { ...given.manifest, service: opts.service } } : given;
      this.tools.set(name, {
        tool,
        hash: manifestHash(tool.manifest),
        checkArgs: compileArgsValidator(tool.manifest),
        checkResult: compileResultValidator(tool.manifest),
      });
    }
  }

  /** The manifests of every hosted tool, sorted by name. */
  manifests(): ToolManifest[] {
    return [...this.tools.values()].map((h) => h.tool.manifest).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The pinned hash of a hosted tool's manifest, or undefined when no tool has that name. */
  hashOf(name: string): string | undefined {
    return this.tools.get(name)?.hash;
  }

  /** Answers one request for service operation `op` (the last subject token). Never throws. */
  async handle(op: string, payload: unknown): Promise<ServiceReply> {
    try {
      if (op === ServiceOp.Manifests) return { ok: true, result: this.manifests() };
      if (op === ServiceOp.Call) return await this.call(parseCall(payload));
      throw new MaxwellError(ErrorCode.BadRequest, `unknown tools operation '${op}': use '${ServiceOp.Call}' or '${ServiceOp.Manifests}'`);
    } catch (err) {
      return failure(MaxwellError.from(err));
    }
  }

  /** Runs one call. Never throws. */
  async call(call: ServiceCall): Promise<ServiceReply> {
    const hosted = this.tools.get(call.target);
    if (!hosted) {
      return failure(new MaxwellError(ErrorCode.NotFound, `no tool named '${call.target}' here; this service hosts: ${[...this.tools.keys()].sort().join(", ") || "nothing"}`));
    }
    if (!hosted.tool.manifest.idempotent) return this.run(hosted, call);
    const key = `${call.target}\u0000${call.effect}`;
    const known = this.replies.get(key);
    if (known) return known;
    const reply = this.run(hosted, call);
    this.replies.set(key, reply);
    if (this.replies.size > this.cacheSize) {
      const oldest = this.replies.keys().next().value;
      if (oldest !== undefined) this.replies.delete(oldest);
    }
    void reply.then((r) => {
      if (!r.ok && TRANSIENT.has(r.error.code)) this.replies.delete(key);
    });
    return reply;
  }

  /** Aborts every running handler (their calls answer `unavailable`). */
  abortAll(reason = "the tool service is stopping"): void {
    for (const controller of this.running) controller.abort(new MaxwellError(ErrorCode.Unavailable, reason));
  }

  /** How many calls are running now. */
  get inFlight(): number {
    return this.running.size;
  }

  private async run(hosted: Hosted, call: ServiceCall): Promise<ServiceReply> {
    const { tool, hash } = hosted;
    const name = tool.manifest.name;
    const log = this.log.child({ effect: call.effect, tool: name, actor: call.actor, principal: call.principal });
    const started = performance.now();
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    try {
      if (call.manifest === undefined) {
        throw new MaxwellError(ErrorCode.BadRequest, `call to tool '${name}' carries no pinned manifest hash`);
      }
      if (call.manifest !== hash) {
        throw new MaxwellError(
          ErrorCode.Conflict,
          `tool '${name}' is not the tool that was registered: the pinned manifest is sha256 ${call.manifest}, this service hosts ${hash}; an operator must review and register the tool again`,
          { detail: { tool: name, pinned: call.manifest, hosted: hash } },
        );
      }
      hosted.checkArgs(call.args);
      const budget = Math.min(call.deadline - this.now(), this.maxRunMs);
      if (budget <= 0) throw new MaxwellError(ErrorCode.Timeout, `call to tool '${name}' arrived after its deadline`);
      const added: string[] = [];
      const ctx: ToolContext = {
        effect: call.effect,
        actor: call.actor,
        principal: call.principal,
        trace: call.trace,
        at: call.at,
        deadline: call.deadline,
        signal: controller.signal,
        secrets: declaredSecrets(tool.manifest, call.secrets),
        labels: call.labels,
        label: (...labels) => void added.push(...labels),
        log,
      };
      this.running.add(controller);
      const stopped = new Promise<never>((_, reject) => {
        controller.signal.addEventListener("abort", () => reject(controller.signal.reason as Error), { once: true });
      });
      timer = setTimeout(() => controller.abort(new MaxwellError(ErrorCode.Timeout, `tool '${name}' did not finish within ${budget} ms`)), budget);
      const result = (await Promise.race([Promise.resolve(tool.handler(call.args as Record<string, unknown>, ctx)), stopped])) ?? null;
      if (hosted.checkResult) {
        try {
          hosted.checkResult(result);
        } catch (err) {
          throw new MaxwellError(ErrorCode.Internal, `${(err as Error).message} (the tool broke its manifest's output schema)`, { cause: err });
        }
      }
      const labels: Labels = joinLabels(tool.labels, added);
      log.info({ ms: Math.round(performance.now() - started), ok: true }, "tool call");
      return labels.length > 0 ? { ok: true, result, labels } : { ok: true, result };
    } catch (err) {
      const error = MaxwellError.from(err);
      const entry = { ms: Math.round(performance.now() - started), ok: false, code: error.code, err: error.message };
      if (error.code === ErrorCode.Internal) log.error(entry, "tool call failed");
      else log.info(entry, "tool call refused");
      return failure(error);
    } finally {
      clearTimeout(timer);
      this.running.delete(controller);
    }
  }
}

function failure(error: MaxwellError): ServiceReply {
  const wire: WireError = error.toWire();
  return { ok: false, error: wire };
}

/** Only the secrets the manifest declares reach the handler, whatever else the call carries. */
function declaredSecrets(manifest: ToolManifest, injected: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const local of Object.keys(manifest.secrets ?? {})) {
    const value = injected?.[local];
    if (typeof value === "string") out[local] = value;
  }
  return Object.freeze(out);
}

function field(call: Record<string, unknown>, name: string, type: "string" | "number"): void {
  if (typeof call[name] !== type || (type === "string" && call[name] === "") || (type === "number" && !Number.isFinite(call[name]))) {
    throw new MaxwellError(ErrorCode.BadRequest, `service call field '${name}' must be a ${type === "string" ? "non-empty string" : "finite number"}`);
  }
}

/** Checks the parts of a {@link ServiceCall} this host relies on. */
function parseCall(payload: unknown): ServiceCall {
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
    throw new MaxwellError(ErrorCode.BadRequest, "service call must be a map");
  }
  const call = payload as Record<string, unknown>;
  for (const name of ["effect", "actor", "principal", "trace", "target"]) field(call, name, "string");
  for (const name of ["at", "deadline"]) field(call, name, "number");
  if (call["seq"] !== undefined) field(call, "seq", "number");
  if (call["op"] !== undefined && call["op"] !== ServiceOp.Call) {
    throw new MaxwellError(ErrorCode.BadRequest, `service call field 'op' is '${String(call["op"])}' but it came on '${ServiceOp.Call}'`);
  }
  if (call["manifest"] !== undefined && typeof call["manifest"] !== "string") {
    throw new MaxwellError(ErrorCode.BadRequest, "service call field 'manifest' must be the pinned manifest's sha256 (hex)");
  }
  const labels = call["labels"] ?? [];
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === "string")) {
    throw new MaxwellError(ErrorCode.BadRequest, "service call field 'labels' must be a list of strings");
  }
  const secrets = call["secrets"];
  if (secrets !== undefined && (typeof secrets !== "object" || secrets === null || Array.isArray(secrets) || !Object.values(secrets).every((v) => typeof v === "string"))) {
    throw new MaxwellError(ErrorCode.BadRequest, "service call field 'secrets' must map names to string values");
  }
  return {
    effect: call["effect"] as EventId,
    seq: (call["seq"] as number | undefined) ?? 0,
    at: call["at"] as number,
    op: ServiceOp.Call,
    actor: call["actor"] as string,
    principal: call["principal"] as string,
    trace: call["trace"] as TraceId,
    target: call["target"] as string,
    args: call["args"],
    labels: labels as string[],
    deadline: call["deadline"] as number,
    ...(call["manifest"] !== undefined ? { manifest: call["manifest"] as string } : {}),
    ...(secrets !== undefined ? { secrets: secrets as Record<string, string> } : {}),
  };
}
