/**
 * The MCP bridge: the tools of a Model Context Protocol server, hosted as Maxwell tools. The tool
 * service connects to the server (stdio: it starts the server as a child process; or streamable
 * HTTP), lists its tools, and gives each one a manifest the kernel pins like any other: name
 * `<prefix>-<mcp tool name>`, the server's version, the tool's description and input schema, an
 * effect class. A call goes agent → kernel (decide, log) → tool service → MCP `tools/call`.
 *
 * What the kernel pinned is what runs: the manifests are fixed when the tool service starts. When
 * the server says its tool list changed, or after it restarts, the bridge lists the tools again;
 * a tool whose manifest is no longer the one hosted (a new description, schema, annotations or
 * server version) is refused with `conflict` until the tool service restarts and an operator
 * re-approves it. The bridge can only see what a server declares, not what its code does.
 */
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  CallToolResultSchema,
  ErrorCode as McpErrorCode,
  McpError,
  ToolListChangedNotificationSchema,
  type Tool as McpTool,
  type ToolAnnotations,
} from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "../../src/runtime/logger.js";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { canonicalJson, validateManifest } from "../../src/protocol/manifest.js";
import { Label, ToolEffect, joinLabels, type Labels, type ToolManifest } from "../../src/protocol/services.js";
import { defineTool, type Tool, type ToolContext } from "./tool.js";

/** One MCP server in `tools.json`'s `mcp` list. Exactly one of `command` (stdio) and `url` (streamable HTTP). */
export interface McpServerConfig {
  /** Prefix of the Maxwell names of this server's tools (`<name>-<tool>`); also its name in logs. */
  name: string;
  /** stdio: the program to start (looked up on PATH), its arguments, extra environment, working directory. */
  command?: string;
  args?: string[];
  /** Added to a minimal inherited environment (HOME, LOGNAME, PATH, SHELL, TERM, USER). */
  env?: Record<string, string>;
  cwd?: string;
  /** Streamable HTTP: the server's endpoint (`http://host:port/mcp`). */
  url?: string;
  /** Effect class by MCP tool name, overriding what the tool's annotations suggest. */
  effects?: Record<string, ToolEffect>;
  /** Labels every result of this server's tools carries (e.g. `["untrusted"]`). */
  labels?: Labels;
  /** How long connecting and listing may take (default 20 s). */
  startTimeoutMs?: number;
}

/** Tools bridged from MCP servers, and how to stop the servers. */
export interface McpBridge {
  tools: Tool[];
  close(): Promise<void>;
}

const TOOL_NAME = /^[a-z][a-z0-9_-]{0,63}$/;
const START_TIMEOUT_MS = 20_000;
/** After a failed reconnect, calls answer `unavailable` for this long before the next attempt. */
const RETRY_AFTER_MS = 5_000;
/** An `isError` result's text is cut here in the error message. */
const MAX_ERROR_TEXT = 1000;
const CLIENT_INFO = { name: "maxwell-tools", version: "0.1.0" };

/**
 * The Maxwell name of MCP tool `tool` of the server named `prefix`: `<prefix>-<tool>` lower-cased,
 * each run of characters outside `a-z0-9_-` replaced by `-`, leading and trailing `-` dropped.
 * Undefined when nothing is left of the tool's name or the result is longer than 64 characters.
 *
 * @example
 * ```ts
 * mcpToolName("github", "create_issue");  // "github-create_issue"
 * mcpToolName("fs", "Read.File");         // "fs-read-file"
 * mcpToolName("x", "日本");               // undefined
 * ```
 */
export function mcpToolName(prefix: string, tool: string): string | undefined {
  const slug = tool
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^-+|-+$/g, "");
  if (slug === "") return undefined;
  const name = `${prefix}-${slug}`;
  return TOOL_NAME.test(name) ? name : undefined;
}

/**
 * The effect class an MCP tool's annotations suggest, the most dangerous that applies:
 * `destructiveHint` (when not read-only) → destructive; `openWorldHint` → external (a read-only
 * web search is still content from outside); `readOnlyHint` → read; otherwise write. Only hints
 * the server states count (the MCP defaults, destructive and open-world, would make every
 * unannotated tool destructive); set `effects` in the configuration to decide for yourself.
 */
export function mcpEffect(annotations: ToolAnnotations | undefined): ToolEffect {
  if (annotations?.destructiveHint === true && annotations.readOnlyHint !== true) return ToolEffect.Destructive;
  if (annotations?.openWorldHint === true) return ToolEffect.External;
  if (annotations?.readOnlyHint === true) return ToolEffect.Read;
  return ToolEffect.Write;
}

/** An MCP tool as the bridge hosts it. */
interface Bridged {
  mcpName: string;
  manifest: ToolManifest;
  labels: Labels;
}

/**
 * The manifests of a server's listed tools. Tools whose name cannot be normalized, whose names
 * collide once normalized (none of them is hosted: which one a name meant must not depend on the
 * listing's order), or whose manifest is not valid are skipped with a log line.
 */
function describeTools(server: McpServerConfig, version: string, listed: readonly McpTool[], log: Logger): Bridged[] {
  const byName = new Map<string, McpTool[]>();
  for (const tool of listed) {
    const name = mcpToolName(server.name, tool.name);
    if (name === undefined) {
      log.warn({ tool: tool.name }, "MCP tool skipped: its name cannot be made a Maxwell tool name (a-z, 0-9, '-', '_', at most 64 characters with the prefix)");
      continue;
    }
    byName.set(name, [...(byName.get(name) ?? []), tool]);
  }
  const out: Bridged[] = [];
  for (const [name, tools] of byName) {
    const tool = tools[0];
    if (tool === undefined) continue;
    if (tools.length > 1) {
      log.warn({ tool: name, mcp: tools.map((t) => t.name) }, "MCP tools skipped: their names are the same once normalized");
      continue;
    }
    const override = server.effects && Object.hasOwn(server.effects, tool.name) ? server.effects[tool.name] : undefined;
    const effect = override ?? mcpEffect(tool.annotations);
    try {
      const manifest = validateManifest({
        name,
        version,
        description: tool.description ?? "",
        effect,
        idempotent: tool.annotations?.idempotentHint === true,
        input: tool.inputSchema,
        ...(tool.outputSchema !== undefined ? { output: resultSchema(tool.outputSchema) } : {}),
      });
      const untrusted = effect === ToolEffect.External || tool.annotations?.openWorldHint === true;
      out.push({ mcpName: tool.name, manifest, labels: joinLabels(server.labels, untrusted ? [Label.Untrusted] : []) });
    } catch (err) {
      log.warn({ tool: name, mcp: tool.name, err: (err as Error).message }, "MCP tool skipped: its manifest is not valid");
    }
  }
  return out;
}

/** The schema of what a bridged tool returns, given the MCP tool's `outputSchema` (which describes `structuredContent`). */
function resultSchema(outputSchema: Record<string, unknown>): Record<string, unknown> {
  const { $schema: _dialect, ...structured } = outputSchema;
  return {
    type: "object",
    properties: { content: { type: "array" }, isError: { const: false }, structuredContent: structured },
    required: ["content", "structuredContent"],
  };
}

/** Every tool the server lists, following `nextCursor`. */
async function listAll(client: Client, timeout: number): Promise<McpTool[]> {
  const tools: McpTool[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const listed = await client.listTools(cursor !== undefined ? { cursor } : undefined, { timeout });
    tools.push(...listed.tools);
    if (listed.nextCursor === undefined) return tools;
    cursor = listed.nextCursor;
  }
  throw new Error("the server's tool list goes on for more than 100 pages");
}

/** What a failed `tools/call` means in Maxwell's codes. */
function callFailure(err: unknown, server: string, tool: string, signal: AbortSignal): MaxwellError {
  if (signal.aborted) return MaxwellError.from(signal.reason);
  if (err instanceof MaxwellError) return err;
  if (err instanceof McpError) {
    switch (err.code as McpErrorCode) {
      case McpErrorCode.InvalidParams:
        return new MaxwellError(ErrorCode.BadRequest, `MCP server '${server}' refused the call to '${tool}': ${err.message}`, { cause: err });
      case McpErrorCode.RequestTimeout:
        return new MaxwellError(ErrorCode.Timeout, `MCP server '${server}' did not answer the call to '${tool}' in time`, { cause: err });
      case McpErrorCode.ConnectionClosed:
        return new MaxwellError(ErrorCode.Unavailable, `MCP server '${server}' closed the connection during the call to '${tool}'; the next call starts it again`, { cause: err });
      default:
        return new MaxwellError(ErrorCode.Internal, `MCP server '${server}' failed the call to '${tool}': ${err.message}`, { cause: err });
    }
  }
  return new MaxwellError(ErrorCode.Unavailable, `cannot reach MCP server '${server}': ${(err as Error).message}`, { cause: err });
}

/** The text of an `isError` result, for the error message. */
function errorText(content: readonly { type: string; text?: unknown }[]): string {
  const text = content
    .filter((c) => c.type === "text" && typeof c.text === "string")
    .map((c) => c.text as string)
    .join("\n")
    .trim();
  if (text === "") return "(it gave no text)";
  return text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}…` : text;
}

/**
 * One MCP server: the client connected to it, reconnecting on the next call after the server goes
 * away, and the check that what it lists is still what the tool service hosts.
 */
class McpSession {
  private client: Client | undefined;
  private opening: Promise<Client> | undefined;
  private retryAt = 0;
  private checking: Promise<void> | undefined;
  private closing = false;
  /** Maxwell name → canonical JSON of the manifest and labels hosted since startup. */
  private hosted = new Map<string, string>();
  /** Maxwell name → why the tool is refused now. */
  private readonly drifted = new Map<string, string>();

  constructor(
    readonly config: McpServerConfig,
    private readonly log: Logger,
  ) {}

  private get timeout(): number {
    return this.config.startTimeoutMs ?? START_TIMEOUT_MS;
  }

  /** Connects for the first time; the tools listed now are the ones hosted until the service restarts. */
  async start(): Promise<Bridged[]> {
    const { client, listed } = await this.connect();
    const bridged = describeTools(this.config, client.getServerVersion()?.version ?? "unknown", listed, this.log);
    this.hosted = new Map(bridged.map((b) => [b.manifest.name, fingerprint(b)]));
    this.client = client;
    return bridged;
  }

  /** The client to call tool `name` with: after any pending re-listing, reconnecting if needed. Throws when the tool is refused. */
  async ready(name: string): Promise<Client> {
    await this.checking;
    const client = this.client ?? (await this.reconnect());
    const why = this.drifted.get(name);
    if (why !== undefined) {
      throw new MaxwellError(
        ErrorCode.Conflict,
        `tool '${name}' is not the tool that was registered: ${why}; restart the tool service and have an operator review and re-approve it (maxwell tool approve)`,
        { detail: { tool: name, mcp: this.config.name } },
      );
    }
    return client;
  }

  /**
   * After a call failed for want of a connection: forget this client so the next call connects
   * again (a stdio server that exited is noticed anyway; an HTTP server that restarted and lost
   * its session is not).
   */
  lost(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    void client.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    const client = this.client;
    this.client = undefined;
    await this.opening?.catch(() => undefined);
    await client?.close().catch(() => undefined);
  }

  private async connect(): Promise<{ client: Client; listed: McpTool[] }> {
    const client = new Client(CLIENT_INFO);
    client.onclose = () => {
      if (this.client !== client) return;
      this.client = undefined;
      if (!this.closing) this.log.warn("MCP server closed the connection; the next call reconnects");
    };
    client.onerror = (err) => this.log.warn({ err: err.message }, "MCP transport error");
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      if (this.client === client) this.recheck(client);
    });
    try {
      await client.connect(this.transport(), { timeout: this.timeout });
      return { client, listed: await listAll(client, this.timeout) };
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
  }

  private transport(): Transport {
    const c = this.config;
    if (c.url !== undefined) return new StreamableHTTPClientTransport(new URL(c.url));
    if (c.command === undefined) throw new MaxwellError(ErrorCode.BadRequest, `MCP server '${c.name}' has neither 'command' nor 'url'`);
    const transport = new StdioClientTransport({ command: c.command, args: c.args ?? [], env: c.env, cwd: c.cwd, stderr: "pipe" });
    const stderr = transport.stderr;
    if (stderr) {
      createInterface({ input: stderr as Readable }).on("line", (line) => this.log.info({ stderr: line.slice(0, 2000) }, "MCP server stderr"));
    }
    return transport;
  }

  /** Reconnects once for every caller waiting, at most every {@link RETRY_AFTER_MS}; re-lists and re-checks the tools. */
  private reconnect(): Promise<Client> {
    if (this.closing) return Promise.reject(new MaxwellError(ErrorCode.Unavailable, "the tool service is stopping"));
    if (this.opening) return this.opening;
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      return Promise.reject(new MaxwellError(ErrorCode.Unavailable, `MCP server '${this.config.name}' is down; the next attempt to start it is in ${Math.ceil(wait / 1000)} s`));
    }
    this.log.info("reconnecting to the MCP server");
    const opening = this.connect().then(
      async ({ client, listed }) => {
        if (this.closing) {
          await client.close().catch(() => undefined);
          throw new MaxwellError(ErrorCode.Unavailable, "the tool service is stopping");
        }
        this.verify(client, listed);
        this.client = client;
        return client;
      },
      (err: unknown) => {
        this.retryAt = Date.now() + RETRY_AFTER_MS;
        this.log.error({ err: (err as Error).message }, "cannot reconnect to the MCP server");
        throw new MaxwellError(ErrorCode.Unavailable, `MCP server '${this.config.name}' is down and reconnecting failed: ${(err as Error).message}`, { cause: err });
      },
    );
    this.opening = opening;
    void opening.then(
      () => (this.opening = undefined),
      () => (this.opening = undefined),
    );
    return opening;
  }

  /** After `notifications/tools/list_changed`: list again; calls wait for it. */
  private recheck(client: Client): void {
    const previous = this.checking ?? Promise.resolve();
    const check = previous.then(async () => {
      try {
        this.verify(client, await listAll(client, this.timeout));
      } catch (err) {
        // Not knowing what the server offers now, stop trusting this connection.
        this.log.warn({ err: (err as Error).message }, "cannot list the MCP server's tools after it said they changed; reconnecting on the next call");
        if (this.client === client) this.client = undefined;
        await client.close().catch(() => undefined);
      }
    });
    this.checking = check;
    void check.then(() => {
      if (this.checking === check) this.checking = undefined;
    });
  }

  /** Marks each hosted tool whose listing is no longer what is hosted (or is again). */
  private verify(client: Client, listed: readonly McpTool[]): void {
    const quiet = this.log.child({}, { level: "error" });
    const now = new Map(describeTools(this.config, client.getServerVersion()?.version ?? "unknown", listed, quiet).map((b) => [b.manifest.name, fingerprint(b)]));
    for (const [name, approved] of this.hosted) {
      const offered = now.get(name);
      const why = offered === undefined ? `MCP server '${this.config.name}' no longer offers it` : offered !== approved ? `MCP server '${this.config.name}' changed it (description, schema, annotations or version) after the tool service started` : undefined;
      if (why !== undefined) {
        if (!this.drifted.has(name)) this.log.warn({ tool: name }, "MCP tool changed: refused until the tool service restarts and an operator re-approves it");
        this.drifted.set(name, why);
      } else if (this.drifted.delete(name)) {
        this.log.info({ tool: name }, "MCP tool is back to the manifest that is hosted");
      }
    }
    for (const name of now.keys()) {
      if (!this.hosted.has(name)) this.log.info({ tool: name }, "new MCP tool: not hosted until the tool service restarts");
    }
  }
}

/** What a bridged tool is pinned as, plus the labels the bridge adds (not in the manifest, so compared here). */
function fingerprint(b: Bridged): string {
  return canonicalJson({ manifest: b.manifest, labels: b.labels });
}

function bridgedTool(session: McpSession, b: Bridged): Tool {
  const server = session.config.name;
  return defineTool({
    manifest: b.manifest,
    labels: b.labels,
    async handler(args: Record<string, unknown>, ctx: ToolContext) {
      const client = await session.ready(b.manifest.name);
      let result;
      try {
        // `request` rather than `callTool`: the SDK reports a result that breaks the tool's output
        // schema as InvalidParams, the code of a refused call; the tool host checks the pinned
        // output schema itself and answers `internal`.
        result = await client.request({ method: "tools/call", params: { name: b.mcpName, arguments: args } }, CallToolResultSchema, {
          signal: ctx.signal,
          timeout: Math.max(1, ctx.deadline - Date.now()),
        });
      } catch (err) {
        const failure = callFailure(err, server, b.mcpName, ctx.signal);
        if (failure.code === ErrorCode.Unavailable && !ctx.signal.aborted) session.lost(client);
        throw failure;
      }
      if (result.isError === true) {
        // The tool ran and said no (MCP: an error for the model to read and correct course).
        throw new MaxwellError(ErrorCode.BadRequest, `MCP tool '${b.mcpName}' on server '${server}' failed: ${errorText(result.content)}`);
      }
      return { content: result.content, isError: false, ...(result.structuredContent !== undefined ? { structuredContent: result.structuredContent } : {}) };
    },
  });
}

/**
 * Connects to one MCP server and makes a Maxwell tool of each tool it lists. Throws `unavailable`
 * when the server cannot be started or listed (the process it started is stopped).
 *
 * @example
 * ```ts
 * const fs = await mcpTools({ name: "fs", command: "npx", args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"] }, log);
 * const service = new ToolService({ servers, creds, tools: [...builtins, ...fs.tools], log });
 * // on shutdown: await service.stop(); await fs.close();
 * ```
 */
export async function mcpTools(server: McpServerConfig, log: Logger): Promise<McpBridge> {
  const session = new McpSession(server, log.child({ mcp: server.name }));
  let bridged: Bridged[];
  try {
    bridged = await session.start();
  } catch (err) {
    await session.close();
    const what = server.url ?? [server.command, ...(server.args ?? [])].join(" ");
    throw new MaxwellError(ErrorCode.Unavailable, `MCP server '${server.name}' (${what}) did not start: ${(err as Error).message}`, { cause: err });
  }
  for (const tool of Object.keys(server.effects ?? {})) {
    if (!bridged.some((b) => b.mcpName === tool)) log.warn({ mcp: server.name, tool }, "effect override names no tool this MCP server hosts");
  }
  const tools = bridged.map((b) => bridgedTool(session, b));
  log.info({ mcp: server.name, tools: tools.map((t) => `${t.manifest.name}:${t.manifest.effect}`) }, "MCP server connected");
  return { tools, close: () => session.close() };
}

/**
 * Starts every configured MCP server. A server that does not start is logged and skipped, and a
 * bridged tool whose name is already `taken` (or taken by an earlier server) is skipped: neither
 * stops the tool service.
 */
export async function startMcpServers(servers: readonly McpServerConfig[], log: Logger, taken: Iterable<string> = []): Promise<McpBridge> {
  const bridges = await Promise.all(
    servers.map((server) =>
      mcpTools(server, log).catch((err: unknown) => {
        log.error({ mcp: server.name, err: (err as Error).message }, "MCP server skipped: it did not start");
        return undefined;
      }),
    ),
  );
  const names = new Set(taken);
  const tools: Tool[] = [];
  for (const bridge of bridges) {
    for (const tool of bridge?.tools ?? []) {
      if (names.has(tool.manifest.name)) {
        log.error({ tool: tool.manifest.name }, "MCP tool skipped: another tool has its name");
        continue;
      }
      names.add(tool.manifest.name);
      tools.push(tool);
    }
  }
  return {
    tools,
    close: async () => {
      await Promise.allSettled(bridges.map((b) => b?.close()));
    },
  };
}
