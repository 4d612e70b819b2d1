/**
 * A toy database for demos and tests: named tables, each a JSON file of rows in one folder, and two
 * tools over it. `db-query` (read) lists tables or returns a table's rows; `db-drop` (destructive)
 * deletes a table and needs the admin password, which the kernel injects from its secret store at
 * the moment of the call (manifest `secrets: { password: "db-admin" }`). The service's configuration
 * holds only the password's sha256, so nothing on the tool side can leak the password itself.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { ToolEffect } from "../../src/protocol/services.js";
import { isName } from "../../src/protocol/subjects.js";
import { defineTool, type Tool } from "./tool.js";

export type Row = Record<string, unknown>;
type Scalar = string | number | boolean | null;

/** Largest table file read. */
const MAX_TABLE_BYTES = 8 * 1024 * 1024;
const SUFFIX = ".json";

/** The tables a new database starts with. */
export const DEMO_TABLES: Readonly<Record<string, readonly Row[]>> = {
  customers: [
    { id: 1, name: "Ada Lovelace", email: "ada@example.com", plan: "pro" },
    { id: 2, name: "Grace Hopper", email: "grace@example.com", plan: "team" },
    { id: 3, name: "Alan Turing", email: "alan@example.com", plan: "pro" },
  ],
  orders: [
    { id: 100, customer: 1, total: 42.5, status: "paid" },
    { id: 101, customer: 2, total: 1200, status: "paid" },
    { id: 102, customer: 3, total: 7.25, status: "refunded" },
  ],
};

/** sha256 (hex) of a password, as `db.adminPasswordSha256` in tools.json holds it. */
export function passwordHash(password: string): string {
  return createHash("sha256").update(password, "utf8").digest("hex");
}

function tableName(name: string): string {
  if (!isName(name)) throw new MaxwellError(ErrorCode.BadRequest, `invalid table name ${JSON.stringify(name)}: use a-z, 0-9, '-', '_', starting with a letter`);
  return name;
}

/** Named tables of JSON rows in one folder. */
export class ToyDatabase {
  private constructor(readonly dir: string) {}

  /** Opens the database in `dir`; a folder that does not exist yet is created holding {@link DEMO_TABLES}. */
  static async open(dir: string): Promise<ToyDatabase> {
    const db = new ToyDatabase(dir);
    if (!existsSync(dir)) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      for (const [name, rows] of Object.entries(DEMO_TABLES)) await db.create(name, rows);
    }
    return db;
  }

  /** Table names and row counts, sorted by name. */
  async tables(): Promise<{ name: string; rows: number }[]> {
    const out: { name: string; rows: number }[] = [];
    for (const file of (await readdir(this.dir)).sort()) {
      if (!file.endsWith(SUFFIX)) continue;
      const name = file.slice(0, -SUFFIX.length);
      if (!isName(name)) continue;
      out.push({ name, rows: (await this.rows(name)).length });
    }
    return out;
  }

  /** All rows of a table; `not_found` when there is no such table. */
  async rows(name: string): Promise<Row[]> {
    const path = this.pathOf(name);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      throw new MaxwellError(ErrorCode.NotFound, `no table named '${name}'`);
    }
    if (size > MAX_TABLE_BYTES) throw new MaxwellError(ErrorCode.Internal, `table '${name}' is larger than ${MAX_TABLE_BYTES} bytes`);
    const parsed: unknown = JSON.parse(await readFile(path, "utf8"));
    if (!Array.isArray(parsed)) throw new MaxwellError(ErrorCode.Internal, `table file for '${name}' does not hold a list of rows`);
    return parsed as Row[];
  }

  /** Creates (or replaces) a table. */
  async create(name: string, rows: readonly Row[]): Promise<void> {
    await writeFile(this.pathOf(name), JSON.stringify(rows, null, 2) + "\n", { mode: 0o600 });
  }

  /** Deletes a table; returns how many rows it held. */
  async drop(name: string): Promise<number> {
    const count = (await this.rows(name)).length;
    await unlink(this.pathOf(name));
    return count;
  }

  private pathOf(name: string): string {
    return join(this.dir, tableName(name) + SUFFIX);
  }
}

export interface DatabaseConfig {
  /** sha256 (hex) of the admin password `db-drop` requires; without it every drop is refused. */
  adminPasswordSha256?: string;
}

const table = { type: "string", pattern: "^[a-z][a-z0-9_-]{0,63}$" } as const;

/** `db-query` and `db-drop` over `db`. */
export function databaseTools(db: ToyDatabase, config: DatabaseConfig = {}): Tool[] {
  const expected = config.adminPasswordSha256 ? Buffer.from(config.adminPasswordSha256.toLowerCase(), "hex") : undefined;

  const query = defineTool<{ table?: string; where?: Record<string, Scalar>; limit?: number }>({
    manifest: {
      name: "db-query",
      version: "1.0.0",
      description: "Queries the demo database. Without 'table': the list of tables and their row counts. With 'table': its rows, filtered by 'where' (field equals value) and cut at 'limit'.",
      effect: ToolEffect.Read,
      idempotent: true,
      input: {
        type: "object",
        properties: {
          table,
          where: { type: "object", additionalProperties: { type: ["string", "number", "boolean", "null"] } },
          limit: { type: "integer", minimum: 1, maximum: 1000 },
        },
        additionalProperties: false,
      },
    },
    async handler(args) {
      if (args.table === undefined) return { tables: await db.tables() };
      const where = Object.entries(args.where ?? {});
      const matching = (await db.rows(args.table)).filter((row) => where.every(([k, v]) => row[k] === v));
      return { table: args.table, total: matching.length, rows: matching.slice(0, args.limit ?? 100) };
    },
  });

  const drop = defineTool<{ table: string }>({
    manifest: {
      name: "db-drop",
      version: "1.0.0",
      description: "Drops a table of the demo database, rows and all. Needs the database admin password, which the kernel injects from its secret store ('db-admin').",
      effect: ToolEffect.Destructive,
      idempotent: false,
      secrets: { password: "db-admin" },
      input: { type: "object", properties: { table }, required: ["table"], additionalProperties: false },
      output: {
        type: "object",
        properties: { dropped: { type: "string" }, rows: { type: "integer" } },
        required: ["dropped", "rows"],
      },
    },
    async handler(args, ctx) {
      if (!expected || expected.length !== 32) {
        throw new MaxwellError(ErrorCode.Forbidden, "db-drop is disabled: this tool service has no admin password configured (db.adminPasswordSha256 in tools.json)");
      }
      const given = ctx.secrets["password"];
      if (given === undefined) throw new MaxwellError(ErrorCode.Unauthorized, "db-drop needs the database admin password, and the call carries none (the kernel injects secret 'db-admin')");
      if (!timingSafeEqual(Buffer.from(passwordHash(given), "hex"), expected)) {
        ctx.log.warn("db-drop refused: wrong admin password");
        throw new MaxwellError(ErrorCode.Unauthorized, "db-drop refused: the admin password is wrong");
      }
      const rows = await db.drop(args.table);
      ctx.log.warn({ table: args.table, rows }, "table dropped");
      return { dropped: args.table, rows };
    },
  });

  return [query, drop];
}
