/**
 * The tool service's configuration, `<data>/tools.json`, and the built-in tools it configures.
 * Every field is optional; a missing file means the defaults: a workspace at `<data>/workspace`,
 * an empty fetch allowlist (every fetch refused), a demo database at `<data>/db` with `db-drop`
 * disabled. Relative paths are relative to the data directory.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Ajv } from "ajv";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { fileTools, type FileToolLimits } from "./file-tools.js";
import { httpFetchTool, type FetchConfig } from "./http-fetch.js";
import type { Tool } from "./tool.js";
import { ToyDatabase, databaseTools, type DatabaseConfig } from "./toy-database.js";
import { Workspace } from "./workspace.js";

export interface ToolsConfig {
  workspace: FileToolLimits & { root: string };
  fetch: FetchConfig;
  db: DatabaseConfig & { dir: string };
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
  const c = raw as { workspace?: Partial<ToolsConfig["workspace"]>; fetch?: Partial<FetchConfig>; db?: Partial<ToolsConfig["db"]>; maxRunMs?: number };
  return {
    workspace: { ...c.workspace, root: resolve(dataDir, c.workspace?.root ?? "workspace") },
    fetch: { ...c.fetch, allow: c.fetch?.allow ?? [] },
    db: { ...c.db, dir: resolve(dataDir, c.db?.dir ?? "db") },
    ...(c.maxRunMs !== undefined ? { maxRunMs: c.maxRunMs } : {}),
  };
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
