/**
 * `maxwell memory ls|get|search|export|digest`: agent memory for people. Each asks the kernel
 * (`mx.admin.memory`), which forwards to the memory service; answers are not logged and carry
 * values in the clear. Export pages through the service's cursor and writes JSON Lines (the
 * `maxwell.memory` format, docs/memory.md) to stdout.
 */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, MaxwellError } from "../../protocol/mod.js";
import type { AdminClient } from "../../runtime/admin-client.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

/** The parts of a record the commands print (the service's RecordView). */
interface RecordShown {
  namespace: string;
  kind: string;
  key: string;
  version: number;
  at: number;
  expiresAt?: number;
  tags: string[];
  provenance: { writer: string; principal: string; causedBy: string; labels: string[] };
  value?: unknown;
  vector?: number[];
}

interface NamespaceShown {
  namespace: string;
  kv: number;
  episodes: number;
  revision: number;
  dimension?: number;
}

async function withAdmin<T>(globals: () => GlobalOptions, run: (admin: AdminClient) => Promise<T>): Promise<T> {
  const admin = await cliContext(globals()).admin();
  try {
    return await run(admin);
  } finally {
    await admin.close();
  }
}

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new MaxwellError(ErrorCode.BadRequest, `${what} must be a positive integer, not ${JSON.stringify(text)}`);
  return n;
}

function oneLine(value: unknown, width = 80): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

function provenanceLine(r: RecordShown): string {
  const p = r.provenance;
  return `written by ${p.writer} for ${p.principal} at ${new Date(r.at).toISOString()} (event ${p.causedBy})${p.labels.length > 0 ? ` labels ${p.labels.join(",")}` : ""}`;
}

/** Registers `maxwell memory` and its subcommands. */
export function registerMemoryCommand(program: Command, globals: () => GlobalOptions): void {
  const memory = program.command("memory").description("agent memory: list namespaces, read, search, export, and the state digest");

  memory
    .command("import <namespace> [file]")
    .description("import an export (JSON Lines, from 'maxwell memory export') into an empty namespace; logged, with the content sealed like any write")
    .action(async (namespace: string, file: string | undefined) => {
      try {
        const text = file ? readFileSync(file, "utf8") : await readStdin();
        const lines = text.split("\n").filter((l) => l.trim() !== "");
        if (lines.length === 0) throw new MaxwellError(ErrorCode.BadRequest, "nothing to import: give an export file or pipe one in");
        const r = await withAdmin(globals, (a) => a.memory<{ seq: number; records: number }>({ op: "import", namespace, lines }));
        process.stdout.write(`imported ${r.records} records into ${namespace} (logged at #${r.seq})\n`);
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("erase <namespace>")
    .description("erase a namespace (or one record of it, --key) for good: its key is destroyed, so its content is unreadable everywhere, the log and replay included (the chain still verifies)")
    .option("--key <key>", "erase only this record (a key/value record)")
    .option("--yes", "do it (erasure cannot be undone)")
    .action(async (namespace: string, opts: { key?: string; yes?: boolean }) => {
      try {
        const what = opts.key === undefined ? namespace : `${namespace} ${opts.key}`;
        if (!opts.yes) throw new MaxwellError(ErrorCode.BadRequest, `erasing ${what} cannot be undone; add --yes to do it`);
        const r = await withAdmin(globals, (a) => a.memory<{ seq: number; erasedKey: boolean }>({ op: "erase", namespace, ...(opts.key === undefined ? {} : { key: opts.key }) }));
        process.stdout.write(`erased ${what}${r.erasedKey ? "" : " (it had no key: nothing was ever written)"} (logged at #${r.seq})\n`);
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("ls")
    .description("list memory namespaces with their record counts")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      try {
        const r = await withAdmin(globals, (a) => a.memory<{ namespaces: NamespaceShown[]; appliedSeq: number }>({ op: "ls" }));
        if (opts.json) {
          process.stdout.write(JSON.stringify(r, null, 2) + "\n");
          return;
        }
        if (r.namespaces.length === 0) process.stdout.write("no memory namespaces yet\n");
        for (const n of r.namespaces) {
          process.stdout.write(`${n.namespace.padEnd(40)} ${String(n.kv).padStart(7)} kv ${String(n.episodes).padStart(7)} episodes  revision ${n.revision}${n.dimension ? `  vectors of ${n.dimension}` : ""}\n`);
        }
        process.stdout.write(`(store applied the log up to #${r.appliedSeq})\n`);
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("get <namespace> <key>")
    .description("show a key/value record with its provenance")
    .option("--json", "print JSON")
    .action(async (namespace: string, key: string, opts: { json?: boolean }) => {
      try {
        const { record } = await withAdmin(globals, (a) => a.memory<{ record: RecordShown | null }>({ op: "get", namespace, key }));
        if (!record) throw new MaxwellError(ErrorCode.NotFound, `no record ${JSON.stringify(key)} in ${namespace}`);
        if (opts.json) {
          process.stdout.write(JSON.stringify(record, null, 2) + "\n");
          return;
        }
        process.stdout.write(`${record.namespace} ${record.key} v${record.version}${record.tags.length > 0 ? ` [${record.tags.join(", ")}]` : ""}${record.expiresAt ? ` expires ${new Date(record.expiresAt).toISOString()}` : ""}\n`);
        process.stdout.write(`${provenanceLine(record)}\n`);
        process.stdout.write(`${JSON.stringify(record.value, null, 2)}\n`);
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("search <namespace> <query>")
    .description("full-text search (BM25) in a namespace")
    .option("--k <n>", "how many hits (1-1000)", "10")
    .option("--json", "print JSON")
    .action(async (namespace: string, query: string, opts: { k: string; json?: boolean }) => {
      try {
        const k = positiveInt(opts.k, "--k");
        const { hits } = await withAdmin(globals, (a) => a.memory<{ hits: { record: RecordShown; score: number }[] }>({ op: "search", namespace, mode: "text", query, k }));
        if (opts.json) {
          process.stdout.write(JSON.stringify(hits, null, 2) + "\n");
          return;
        }
        if (hits.length === 0) process.stdout.write("no matches\n");
        for (const h of hits) {
          process.stdout.write(`${h.score.toFixed(3).padStart(8)}  ${h.record.kind === "kv" ? h.record.key : `episode ${h.record.key}`}  ${oneLine(h.record.value)}\n`);
          process.stdout.write(`          ${provenanceLine(h.record)}\n`);
        }
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("export <namespace>")
    .description("write a namespace as JSON Lines (maxwell.memory format) to stdout")
    .action(async (namespace: string) => {
      try {
        await withAdmin(globals, async (a) => {
          let cursor: string | undefined;
          do {
            const page: { lines: string[]; next?: string } = await a.memory({ op: "export", namespace, ...(cursor ? { cursor } : {}) });
            for (const line of page.lines) process.stdout.write(line);
            cursor = page.next;
          } while (cursor !== undefined);
        });
      } catch (err) {
        fail(err);
      }
    });

  memory
    .command("digest")
    .description("the memory store's state digest and the last log sequence it applied")
    .option("--at <ms>", "the instant whose visible state is hashed (ms since the epoch; default now)")
    .option("--json", "print JSON")
    .action(async (opts: { at?: string; json?: boolean }) => {
      try {
        const body: Record<string, unknown> = { op: "digest" };
        if (opts.at !== undefined) body["at"] = positiveInt(opts.at, "--at");
        const r = await withAdmin(globals, (a) => a.memory<{ digest: string; at: number; appliedSeq: number; resumeSeq: number }>(body));
        if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + "\n");
        else process.stdout.write(`${r.digest}  at ${r.at} (${new Date(r.at).toISOString()}), log applied up to #${r.appliedSeq}\n`);
      } catch (err) {
        fail(err);
      }
    });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
