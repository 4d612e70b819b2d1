/**
 * Budgets, held actions, tools and secrets:
 * `maxwell budget [set]`, `maxwell approvals`, `maxwell approve|deny ID --as PRINCIPAL`,
 * `maxwell tool list|add|approve`, `maxwell secret set|list|rm`.
 */
import { existsSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { ErrorCode, MaxwellError, SyscallOp, decodeMap, newScope, subjects, syscallId, type BudgetLimits, type BudgetScope } from "../../protocol/mod.js";
import type { ApprovalSummary, BudgetRow, ToolRegisterRequest } from "../../runtime/admin.js";
import { SyscallClient } from "../../sdk/syscalls.js";
import { connectNats } from "../../transport/connection.js";
import { SecretStore } from "../../runtime/secrets.js";
import { cliContext, fail, type GlobalOptions } from "../context.js";

function whole(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new MaxwellError(ErrorCode.BadRequest, `${flag} must be a whole number >= 0, not '${value}'`);
    return n;
  };
}

function usd(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new MaxwellError(ErrorCode.BadRequest, `--usd must be an amount of dollars >= 0, not '${value}'`);
  return Math.round(n * 1_000_000);
}

function showLimit(used: number, limit: number | undefined, format: (n: number) => string = String): string {
  return limit === undefined ? `${format(used)}` : `${format(used)}/${format(limit)}`;
}

const dollars = (micro: number): string => `$${(micro / 1_000_000).toFixed(4)}`;

function budgetTable(rows: BudgetRow[]): string {
  if (rows.length === 0) return "no budgets set and nothing used yet\n";
  const lines = ["BUDGET                         TOKENS            MONEY                 TOOL CALLS  MSG/MIN   OPEN   APPROVALS"];
  for (const r of rows) {
    const l = r.limits ?? {};
    lines.push(
      [
        r.key.padEnd(30),
        showLimit(r.used.tokens + r.reserved.tokens, l.tokens).padEnd(17),
        showLimit(r.used.microUsd + r.reserved.microUsd, l.microUsd, dollars).padEnd(21),
        showLimit(r.used.toolCalls + r.reserved.toolCalls, l.toolCalls).padEnd(11),
        showLimit(r.used.messagesLastMinute, l.messagesPerMinute).padEnd(9),
        showLimit(r.used.open, l.concurrent).padEnd(6),
        showLimit(r.used.approvals, l.pendingApprovals),
      ].join(" "),
    );
  }
  return lines.join("\n") + "\n(used includes what running calls have reserved; a limit is shown as used/limit)\n";
}

function approvalLine(a: ApprovalSummary): string {
  const body = JSON.stringify(a.body);
  return [
    `${a.id}  ${a.status.toUpperCase()}${a.decidedBy ? ` by ${a.decidedBy}` : ""}`,
    `  ${a.actor} ${a.op}${a.to ? ` → ${a.to}` : ""}  for ${a.principal}`,
    `  why held: ${a.reason}${a.labels.length ? `  labels: ${a.labels.join(",")}` : ""}`,
    `  request: ${body.length > 300 ? `${body.slice(0, 299)}…` : body}`,
    `  digest ${a.digest}  expires ${new Date(a.expiresAt).toISOString()}`,
  ].join("\n");
}

/** Prints held actions as the kernel notifies `principal` of them, until interrupted. */
async function watchApprovals(g: GlobalOptions, principal: string | undefined, json: boolean): Promise<void> {
  if (!principal) throw new MaxwellError(ErrorCode.BadRequest, "--watch needs --as PRINCIPAL: notices go to the principals allowed to decide");
  const ctx = cliContext(g);
  const creds = ctx.layout.credsOf(principal);
  if (!existsSync(creds)) throw new MaxwellError(ErrorCode.NotFound, `no creds for '${principal}' at ${creds}`);
  const nc = await connectNats({ servers: ctx.natsUrl(), creds, name: `maxwell-cli:${principal}:approvals`, inboxPrefix: subjects.inboxPrefix(principal) });
  const sub = nc.subscribe(subjects.approvalNotices(principal));
  const stop = (): void => void nc.drain();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  process.stderr.write(`watching for held actions ${principal} may decide (Ctrl-C to stop)\n`);
  for await (const m of sub) {
    const n = decodeMap(m.data) as unknown as ApprovalSummary & { approval: string };
    if (json) process.stdout.write(JSON.stringify(n) + "\n");
    else process.stdout.write(`${approvalLine({ ...n, id: n.approval, at: Date.now(), status: "pending" })}\n  decide: maxwell approve ${n.approval} --as ${principal}   |   maxwell deny ${n.approval} --as ${principal}\n\n`);
  }
}

export function registerGovernance(program: Command, globals: () => GlobalOptions): void {
  const budget = program
    .command("budget")
    .description("show budget usage against limits (tokens, money, tool calls, messages/min, outstanding work, approvals)")
    .option("--json", "print as JSON")
    .action(async (opts: { json?: boolean }) => {
      try {
        const admin = await cliContext(globals()).admin();
        try {
          const rows = await admin.budget();
          process.stdout.write(opts.json ? JSON.stringify(rows, null, 2) + "\n" : budgetTable(rows));
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
  budget
    .command("set <scope> [name]")
    .description("set the limits of a budget: scope is principal NAME, agent NAME, or trace (every trace); no limits clears it")
    .option("--tokens <n>", "model tokens (input + output)", whole("--tokens"))
    .option("--usd <dollars>", "money spent on model calls", usd)
    .option("--tool-calls <n>", "tool calls", whole("--tool-calls"))
    .option("--messages-per-minute <n>", "messages and requests sent per rolling minute", whole("--messages-per-minute"))
    .option("--concurrent <n>", "requests and effects outstanding at once", whole("--concurrent"))
    .option("--pending-approvals <n>", "held actions waiting for a human at once", whole("--pending-approvals"))
    .option("--depth <n>", "causal hops from the principal's injection", whole("--depth"))
    .action(async (scope: string, name: string | undefined, opts: Record<string, number | undefined>) => {
      try {
        if (scope !== "principal" && scope !== "agent" && scope !== "trace") throw new MaxwellError(ErrorCode.BadRequest, `scope must be principal, agent or trace, not '${scope}'`);
        if (scope !== "trace" && !name) throw new MaxwellError(ErrorCode.BadRequest, `budget set ${scope} needs the ${scope}'s name`);
        const limits: BudgetLimits = {};
        const map: [string, keyof BudgetLimits][] = [
          ["tokens", "tokens"],
          ["usd", "microUsd"],
          ["toolCalls", "toolCalls"],
          ["messagesPerMinute", "messagesPerMinute"],
          ["concurrent", "concurrent"],
          ["pendingApprovals", "pendingApprovals"],
          ["depth", "depth"],
        ];
        for (const [flag, field] of map) if (opts[flag] !== undefined) limits[field] = opts[flag];
        const admin = await cliContext(globals()).admin();
        try {
          const r = await admin.budgetSet({ scope: scope as BudgetScope, ...(name ? { name } : {}), limits });
          process.stdout.write(`${scope}${name ? ` ${name}` : ""}: ${Object.keys(limits).length ? JSON.stringify(limits) : "cleared"} (logged at #${r.seq})\n`);
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });

  program
    .command("approvals")
    .description("list actions held for a human decision")
    .option("--all", "include decided and expired ones")
    .option("--json", "print as JSON")
    .option("--watch", "keep running and print each new held action the principal (--as) may decide")
    .option("--as <principal>", "with --watch: the principal to be notified as (uses <data>/creds/<principal>.creds)")
    .action(async (opts: { all?: boolean; json?: boolean; watch?: boolean; as?: string }) => {
      try {
        if (opts.watch) {
          await watchApprovals(globals(), opts.as, Boolean(opts.json));
          return;
        }
        const admin = await cliContext(globals()).admin();
        try {
          const rows = await admin.approvals({ all: Boolean(opts.all) });
          if (opts.json) process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
          else process.stdout.write(rows.length === 0 ? "nothing is waiting for a decision\n" : rows.map(approvalLine).join("\n\n") + "\n");
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });

  for (const verdict of ["approve", "deny"] as const) {
    program
      .command(`${verdict} <id>`)
      .description(verdict === "approve" ? "approve a held action (as a principal allowed to approve); it runs at once" : "refuse a held action; the agent gets a forbidden error")
      .requiredOption("--as <principal>", "the principal deciding (uses <data>/creds/<principal>.creds)")
      .option("--as-creds <file>", "the principal's creds file, if not in the data dir")
      .option("--digest <sha256>", "the digest of the request you reviewed (default: the one 'maxwell approvals' shows now)")
      .option("--reason <text>", "why (recorded in the log)")
      .option("--endorse", "vouch for the action's inputs: it runs without the 'untrusted' label")
      .action(async (id: string, opts: { as: string; asCreds?: string; digest?: string; reason?: string; endorse?: boolean }) => {
        try {
          const ctx = cliContext(globals());
          let digest = opts.digest;
          if (!digest) {
            const admin = await ctx.admin();
            try {
              const held = (await admin.approvals({ all: true })).find((a) => a.id === id);
              if (!held) throw new MaxwellError(ErrorCode.NotFound, `no held action ${id} (see 'maxwell approvals')`);
              process.stdout.write(approvalLine(held) + "\n");
              digest = held.digest;
            } finally {
              await admin.close();
            }
          }
          const creds = opts.asCreds ?? ctx.layout.credsOf(opts.as);
          if (!existsSync(creds)) throw new MaxwellError(ErrorCode.NotFound, `no creds for '${opts.as}' at ${creds} (register it: maxwell principal add ${opts.as} --groups approvers)`);
          const nc = await connectNats({ servers: ctx.natsUrl(), creds, name: `maxwell-cli:${opts.as}`, inboxPrefix: subjects.inboxPrefix(opts.as), reconnect: false });
          try {
            const client = new SyscallClient(nc, opts.as, { retryForMs: 5_000 });
            const body = { approval: id, digest, verdict, ...(opts.reason ? { reason: opts.reason } : {}), ...(opts.endorse ? { endorse: true } : {}) };
            const r = await client.call(SyscallOp.Approve, { id: syscallId(`cli-${newScope()}`, 0), body });
            process.stdout.write(`${verdict === "approve" ? "approved" : "denied"} ${id} as ${opts.as} (logged at #${r.seq})\n`);
          } finally {
            await nc.close();
          }
        } catch (err) {
          fail(err);
        }
      });
  }

  const tool = program.command("tool").description("registered tools and their pinned manifests");
  tool
    .command("list")
    .description("list registered tools")
    .option("--json", "print as JSON")
    .action(async (opts: { json?: boolean }) => {
      try {
        const admin = await cliContext(globals()).admin();
        try {
          const rows = await admin.tools();
          if (opts.json) process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
          else if (rows.length === 0) process.stdout.write("no tools registered\n");
          else for (const t of rows) process.stdout.write(`${t.name.padEnd(16)} ${t.version.padEnd(8)} ${t.effect.padEnd(12)} ${t.hash.slice(0, 12)}  ${t.service}${t.groups.length ? `  groups=${t.groups.join(",")}` : ""}  ${t.description}\n`);
        } finally {
          await admin.close();
        }
      } catch (err) {
        fail(err);
      }
    });
  for (const mode of ["add", "approve"] as const) {
    tool
      .command(`${mode} [manifest]`)
      .description(mode === "add" ? "pin a tool manifest (a JSON file), or every manifest a tool service hosts (--service)" : "re-approve manifests that changed since they were pinned")
      .option("--service <name>", "take the manifests from this tool service", mode === "approve" ? "tools" : undefined)
      .option("--groups <list>", "Cedar groups the tool joins, comma-separated (e.g. cleared)")
      .action(async (file: string | undefined, opts: { service?: string; groups?: string }) => {
        try {
          const req: ToolRegisterRequest = {};
          if (file) req.manifest = JSON.parse(readFileSync(file, "utf8")) as unknown;
          else if (opts.service) req.service = opts.service;
          else throw new MaxwellError(ErrorCode.BadRequest, "give a manifest file or --service NAME");
          if (mode === "approve") req.approve = true;
          if (opts.groups) req.groups = opts.groups.split(",").map((g) => g.trim()).filter(Boolean);
          const admin = await cliContext(globals()).admin();
          try {
            const r = await admin.toolRegister(req);
            for (const t of r.tools) process.stdout.write(`${t.name}@${t.version} (${t.effect}) ${t.hash.slice(0, 12)}: ${t.status}\n`);
          } finally {
            await admin.close();
          }
        } catch (err) {
          fail(err);
        }
      });
  }

  const secret = program.command("secret").description("the kernel's secret store: values injected into tool calls, never seen by agents");
  secret
    .command("set <name>")
    .description("store a secret; the value is read from stdin (so it stays out of shell history)")
    .action(async (name: string) => {
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        const value = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
        if (!value) throw new MaxwellError(ErrorCode.BadRequest, "no value on stdin (e.g. printf %s \"$TOKEN\" | maxwell secret set NAME)");
        SecretStore.forDataDir(cliContext(globals()).layout.root).set(name, value);
        process.stdout.write(`secret '${name}' stored (encrypted at rest)\n`);
      } catch (err) {
        fail(err);
      }
    });
  secret
    .command("list")
    .description("list secret names (never values)")
    .action(() => {
      try {
        const names = SecretStore.forDataDir(cliContext(globals()).layout.root).names();
        process.stdout.write(names.length ? names.join("\n") + "\n" : "no secrets stored\n");
      } catch (err) {
        fail(err);
      }
    });
  secret
    .command("rm <name>")
    .description("delete a secret")
    .action((name: string) => {
      try {
        const gone = SecretStore.forDataDir(cliContext(globals()).layout.root).delete(name);
        if (!gone) throw new MaxwellError(ErrorCode.NotFound, `no secret named '${name}'`);
        process.stdout.write(`secret '${name}' deleted\n`);
      } catch (err) {
        fail(err);
      }
    });
}
