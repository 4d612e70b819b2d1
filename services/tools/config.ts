/**
 * The tool service's configuration, `<data>/tools.json`, and the built-in tools it configures.
 * Every field is optional; a missing file means the defaults: a workspace at `<data>/workspace`,
 * an empty fetch allowlist (every fetch refused), a demo database at `<data>/db` with `db-drop`
 * disabled, no MCP servers. Relative paths are relative to the data directory.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Ajv } from "ajv";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { ToolEffect } from "../../src/protocol/services.js";
import { fileTools, type FileToolLimits } from "./file-tools.js";
import { httpFetchTool, type FetchConfig } from "./http-fetch.js";
import type { McpServerConfig } from "./mcp.js";
import type { Tool } from "./tool.js";
import { ToyDatabase, databaseTools, type DatabaseConfig } from "./toy-database.js";
import { Workspace } from "./workspace.js";

export interface ToolsConfig {
  workspace: FileToolLimits & { root: string };
  fetch: FetchConfig;
  db: DatabaseConfig & { dir: string };
  /** MCP servers whose tools are hosted too (see mcp.ts). */
  mcp: McpServerConfig[];
  /** Longest any handler may run, whatever deadline a call carries (ms). */
  maxRunMs?: number;
}

const positive = { type: "integer", minimum: 1 } as const;
const schema = {
  type: "object",
  additionalProperties: false,
  properties: {
    workspace: {
      type: "object",
      additionalProperties: false,
      properties: {
        root: { type: "string", minLength: 1 },
        maxReadBytes: positive,
        maxWriteBytes: positive,
        maxListEntries: positive,
        labels: { type: "array", items: { type: "string", minLength: 1 } },
      },
    },
    fetch: {
      type: "object",
      additionalProperties: false,
      properties: {
        allow: { type: "array", items: { type: "string", pattern: "^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\\.?$|^\\[[0-9A-Fa-f:.]+\\]$" } },
        maxBytes: positive,
        timeoutMs: positive,
        maxRedirects: { type: "integer", minimum: 0 },
      },
    },
    db: {
      type: "object",
      additionalProperties: false,
      properties: {
        dir: { type: "string", minLength: 1 },
        adminPasswordSha256: { type: "string", pattern: "^[0-9a-fA-F]{64}$" },
      },
    },
    mcp: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name"],
        properties: {
          name: { type: "string", pattern: "^[a-z][a-z0-9_-]{0,31}$" },
          command: { type: "string", minLength: 1 },
          args: { type: "array", items: { type: "string" } },
          env: { type: "object", additionalProperties: { type: "string" } },
          cwd: { type: "string", minLength: 1 },
          url: { type: "string", pattern: "^https?://" },
          effects: { type: "object", additionalProperties: { enum: Object.values(ToolEffect) } },
          labels: { type: "array", items: { type: "string", minLength: 1 } },
          startTimeoutMs: positive,
        },
      },
    },
    maxRunMs: positive,
  },
} as const;

const validate = new Ajv({ allErrors: false, strict: false }).compile(schema);

/**
 * Reads the configuration (`file`, default `<dataDir>/tools.json`; a missing default file means
 * the defaults). Throws `bad_request` naming the offending field.
 */
export function loadToolsConfig(dataDir: string, file?: string): ToolsConfig {
  const path = file ?? resolve(dataDir, "tools.json");
  let raw: unknown = {};
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    if (!missing || file !== undefined) {
      throw new MaxwellError(ErrorCode.BadRequest, `cannot read tool configuration ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  return parseToolsConfig(raw, dataDir, path);
}

/** Checks a configuration object and fills in defaults; relative paths resolve against `dataDir`. */
export function parseToolsConfig(raw: unknown, dataDir: string, where = "tool configuration"): ToolsConfig {
  if (!validate(raw)) {
    const first = validate.errors?.[0];
    const at = first?.instancePath ? first.instancePath.slice(1).replace(/\//g, ".") : "";
    const extra = (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const why = extra ? `has an unknown field '${extra}'` : (first?.message ?? "is invalid");
    throw new MaxwellError(ErrorCode.BadRequest, `${where}${at ? ` field '${at}'` : ""} ${why}`);
  }
  const c = raw as { workspace?: Partial<ToolsConfig["workspace"]>; fetch?: Partial<FetchConfig>; db?: Partial<ToolsConfig["db"]>; mcp?: McpServerConfig[]; maxRunMs?: number };
  return {
    workspace: { ...c.workspace, root: resolve(dataDir, c.workspace?.root ?? "workspace") },
    fetch: { ...c.fetch, allow: c.fetch?.allow ?? [] },
    db: { ...c.db, dir: resolve(dataDir, c.db?.dir ?? "db") },
    mcp: parseMcpServers(c.mcp ?? [], dataDir, where),
    ...(c.maxRunMs !== undefined ? { maxRunMs: c.maxRunMs } : {}),
  };
}

/** What the schema cannot say about the `mcp` list: one transport each, distinct names. */
function parseMcpServers(servers: McpServerConfig[], dataDir: string, where: string): McpServerConfig[] {
  const seen = new Set<string>();
  return servers.map((server, i) => {
    const at = `${where} field 'mcp.${i}'`;
    if (seen.has(server.name)) throw new MaxwellError(ErrorCode.BadRequest, `${at}: two MCP servers are named '${server.name}'`);
    seen.add(server.name);
    if ((server.command === undefined) === (server.url === undefined)) {
      throw new MaxwellError(ErrorCode.BadRequest, `${at}: MCP server '${server.name}' needs either 'command' (stdio) or 'url' (streamable HTTP)`);
    }
    if (server.url !== undefined && (server.args !== undefined || server.env !== undefined || server.cwd !== undefined)) {
      throw new MaxwellError(ErrorCode.BadRequest, `${at}: 'args', 'env' and 'cwd' are for a 'command', not a 'url'`);
    }
    if (server.url !== undefined && !URL.canParse(server.url)) throw new MaxwellError(ErrorCode.BadRequest, `${at}: 'url' is not a URL`);
    return { ...server, ...(server.cwd !== undefined ? { cwd: resolve(dataDir, server.cwd) } : {}) };
  });
}

/**
 * The built-in tools, configured: `file-read`, `file-list`, `file-write`, `http-fetch`,
 * `db-query`, `db-drop`. Creates the workspace folder, and the demo database, when missing.
 */
export async function builtinTools(config: ToolsConfig): Promise<Tool[]> {
  const workspace = await Workspace.open(config.workspace.root, { create: true });
  const db = await ToyDatabase.open(config.db.dir);
  return [...fileTools(workspace, config.workspace), httpFetchTool(config.fetch), ...databaseTools(db, config.db)];
}
