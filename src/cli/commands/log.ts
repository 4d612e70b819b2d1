/** `maxwell log`: the log, readably, with filters; `--follow` keeps printing. */
import type { Command } from "commander";
import { decodeMap, type LogEvent } from "../../protocol/mod.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";
import { formatEvent, involves } from "../format.js";

interface LogOptions {
  agent?: string;
  principal?: string;
  trace?: string;
  type?: string;
  from?: string;
  follow?: boolean;
  json?: boolean;
}

export function registerLog(program: Command, globals: () => GlobalOptions): void {
  program
    .command("log")
    .description("show the log: every decision, message, reply and rejection, in order")
    .option("--agent <name>", "only events sent by, to, or about this agent")
    .option("--principal <name>", "only events on this principal's behalf")
    .option("--trace <id>", "only events of this trace (a prefix is enough)")
    .option("--type <type>", "only events of this type (message, reply, decision.denied, input.rejected, ...)")
    .option("--from <seq>", "start at this sequence")
    .option("-f, --follow", "keep printing new events")
    .option("--json", "one JSON object per line")
    .action(async (opts: LogOptions) => {
      try {
        await showLog(globals(), opts);
      } catch (err) {
        fail(err);
      }
    });
}

async function showLog(g: GlobalOptions, opts: LogOptions): Promise<void> {
  const ctx = cliContext(g);
  const source = await ctx.openLog("log");
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const match = (e: LogEvent): boolean => {
    const r = e as unknown as Record<string, unknown>;
    if (opts.agent && !involves(e, opts.agent)) return false;
    if (opts.principal && r["principal"] !== opts.principal) return false;
    if (opts.trace && !(typeof r["trace"] === "string" && r["trace"].startsWith(opts.trace))) return false;
    if (opts.type && e.type !== opts.type) return false;
    return true;
  };
  try {
    const from = opts.from !== undefined ? Number(opts.from) : 1;
    for await (const entry of source.entries({ from, follow: Boolean(opts.follow), signal: abort.signal })) {
      let event: LogEvent;
      try {
        event = decodeMap(entry.data) as unknown as LogEvent;
      } catch {
        process.stdout.write(`#${entry.seq} (undecodable entry on ${entry.subject})\n`);
        continue;
      }
      if (!match(event)) continue;
      process.stdout.write((opts.json ? JSON.stringify({ subject: entry.subject, ...event }) : formatEvent(event)) + "\n");
    }
  } finally {
    await source.close();
  }
}
