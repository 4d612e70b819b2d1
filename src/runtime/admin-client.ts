/**
 * The admin side of the kernel: what the CLI (and tests) use to register identities, list them,
 * ask for status and force a checkpoint. Connects with the admin credential.
 */
import { ErrorCode, MaxwellError, decodeMap, encode, subjects, type AdminOp } from "../protocol/mod.js";
import { connectNats, requestRaw, type NatsConnection } from "../transport/connection.js";
import { READ_SEQS_MAX } from "./admin.js";
import type { ApprovalSummary, BudgetRow, BudgetSetRequest, StateReplayResult, ToolRegisterRequest, ToolRegisterResult, ToolSummary } from "./admin.js";
import type { AdminReply, ControlRequest, ControlResult, IdentitySummary, KernelStatus, PolicyApplyResult, PolicyTestRequest, PolicyTestResult, ReadRequest, ReadResult, RegisterRequest, RegisterResult } from "./admin.js";

export class AdminClient {
  private constructor(readonly nc: NatsConnection) {}

  /**
   * `inboxPrefix` is for services that read the log through the kernel (the memory service): they
   * may not subscribe to `_INBOX.>`, only to their own inbox under `mx.rep.svc-<name>`.
   */
  static async connect(servers: string, creds: string | Uint8Array, opts: { reconnect?: boolean; inboxPrefix?: string; name?: string } = {}): Promise<AdminClient> {
    const nc = await connectNats({ servers, creds, name: opts.name ?? "maxwell-admin", reconnect: opts.reconnect ?? false, ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}) });
    return new AdminClient(nc);
  }

  private async call<T>(op: AdminOp, body: unknown, timeoutMs = 10_000): Promise<T> {
    let raw: Uint8Array;
    try {
      raw = await requestRaw(this.nc, subjects.admin(op), encode(body ?? {}), { timeoutMs });
    } catch (err) {
      throw new MaxwellError(ErrorCode.Unavailable, `the kernel did not answer (${(err as Error).message}); is 'maxwell up' running?`, { cause: err });
    }
    const reply = decodeMap(raw) as unknown as AdminReply<T>;
    if (reply.ok) return reply.result;
    throw MaxwellError.fromWire(reply.error);
  }

  /** Version of the NATS server this client is connected to, from its INFO. */
  get serverVersion(): string | undefined {
    return this.nc.info?.version;
  }

  register(req: RegisterRequest): Promise<RegisterResult> {
    return this.call("register", req, 30_000);
  }
  list(): Promise<IdentitySummary[]> {
    return this.call("list", {});
  }
  status(): Promise<KernelStatus> {
    return this.call("status", {});
  }
  budget(): Promise<BudgetRow[]> {
    return this.call("budget", {});
  }
  budgetSet(req: BudgetSetRequest): Promise<{ seq: number }> {
    return this.call("budget-set", req);
  }
  /** Held actions; `all` includes decided ones. */
  approvals(opts: { all?: boolean } = {}): Promise<ApprovalSummary[]> {
    return this.call("approvals", opts);
  }
  toolRegister(req: ToolRegisterRequest): Promise<ToolRegisterResult> {
    return this.call("tool-register", req, 30_000);
  }
  tools(): Promise<ToolSummary[]> {
    return this.call("tools", {});
  }
  /** Rebuilds the kernel's state from the log and compares digests (or shows it as of `to`). */
  replayState(to?: number, opts: { full?: boolean } = {}): Promise<StateReplayResult> {
    return this.call("state", { ...(to === undefined ? {} : { to }), ...(opts.full ? { full: true } : {}) }, 120_000);
  }
  /** A memory operation for people, forwarded by the kernel to the memory service. */
  memory<T = unknown>(body: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    return this.call("memory", body, timeoutMs);
  }
  /** Raw log entries from `from` on, as stored. */
  read(req: ReadRequest): Promise<ReadResult> {
    return this.call("read", req, 30_000);
  }

  /**
   * The entries stored at `seqs`, in ascending order (sequences the log does not hold are left
   * out): as many requests as the kernel's caps need, {@link READ_SEQS_MAX} sequences at most each.
   */
  async readAt(seqs: readonly number[]): Promise<ReadResult["entries"]> {
    let rest = [...new Set(seqs)].sort((a, b) => a - b);
    const out: ReadResult["entries"] = [];
    while (rest.length > 0) {
      const ask = rest.slice(0, READ_SEQS_MAX);
      const r = await this.read({ from: ask[0] as number, seqs: ask });
      out.push(...r.entries);
      const settled = r.settled ?? ask.length;
      if (settled < 1) throw new MaxwellError(ErrorCode.Internal, `the kernel answered none of ${ask.length} sequences from #${ask[0]}`);
      rest = rest.slice(settled);
    }
    return out;
  }

  /**
   * Every entry from `from` on, in order, read through the kernel in pages. Ends at the log's
   * end, or with `follow` keeps asking every `pollMs` until `signal` aborts.
   */
  async *entries(from: number, opts: { follow?: boolean; pollMs?: number; signal?: AbortSignal } = {}): AsyncGenerator<ReadResult["entries"][number]> {
    let next = from;
    while (!opts.signal?.aborted) {
      const batch = await this.read({ from: next, max: 1000 });
      for (const e of batch.entries) yield e;
      const last = batch.entries.at(-1);
      if (last) next = last.seq + 1;
      if (batch.entries.length > 0 && next <= batch.lastSeq) continue;
      if (!opts.follow) return;
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 300));
    }
  }
  /** Re-evaluates recorded decisions under a candidate policy set; changes nothing. */
  policyTest(req: PolicyTestRequest): Promise<PolicyTestResult> {
    return this.call("policy-test", req, 60_000);
  }
  /** Validates and installs a policy set. */
  policyApply(text: string): Promise<PolicyApplyResult> {
    return this.call("policy-apply", { text }, 30_000);
  }
  /** Pauses, resumes, quarantines or releases an agent. */
  control(req: ControlRequest): Promise<ControlResult> {
    return this.call("control", req);
  }
  checkpoint(): Promise<{ upTo: number }> {
    return this.call("checkpoint", {});
  }

  /** Waits until the kernel answers status (it may still be rebuilding). */
  async waitForKernel(timeoutMs = 30_000): Promise<KernelStatus> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.call<KernelStatus>("status", {}, 1000);
      } catch (err) {
        if (Date.now() > until) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}
