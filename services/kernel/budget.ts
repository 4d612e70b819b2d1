/**
 * Budgets: cgroups for cost. Limits per principal, per agent and per trace on model tokens,
 * money, tool calls, messages per rolling minute, work outstanding at once, pending approvals and
 * causal depth. Usage is a projection of the log (evolve calls the `on*` methods), so a restarted
 * or replayed kernel counts exactly what the live one did.
 *
 * Reserve before, settle after: an effect reserves its worst case when it is allowed (a model
 * call: estimated prompt + max_tokens), and settles to what it really used when its outcome is
 * recorded. Between the decision and the moment its event is stored, the kernel holds the charge
 * as provisional, so concurrent calls cannot all squeeze under the same limit.
 */
import { ErrorCode, type BudgetLimits, type BudgetScope, type Reservation, type TraceId, type WireError } from "../../src/protocol/mod.js";

/** What one budget key has used. */
export interface BudgetUsage {
  /** Settled usage. */
  tokens: number;
  microUsd: number;
  toolCalls: number;
  /** Held by effects not yet settled. */
  reserved: Required<Reservation>;
  /** Requests awaiting a reply plus effects not yet completed. */
  open: number;
  /** Approvals waiting for a human. */
  approvals: number;
  /** Messages sent (only counted while a per-minute limit applies). */
  sent: number[];
}

/** Charges decided on whose events are not stored yet, per key. */
interface Provisional {
  reserved: Required<Reservation>;
  open: number;
  approvals: number;
  messages: number;
  /** Charges outstanding: the entry goes when the last is released. */
  charges: number;
}

/** A charge the kernel has decided on but whose event is not stored yet. */
export interface Charge {
  keys: readonly string[];
  reserve?: Reservation;
  message?: boolean;
  open?: boolean;
  approval?: boolean;
}

/** What an action asks of the budgets it falls under. */
export interface BudgetAsk {
  reserve?: Reservation;
  /** It sends a message or request (counts against messages per minute). */
  message?: boolean;
  /** It stays outstanding (a request or an effect). */
  open?: boolean;
  /** It opens an approval. */
  approval?: boolean;
  depth: number;
  now: number;
}

const MINUTE_MS = 60_000;
/** Traces remembered for usage; older ones fall out first. */
const MAX_TRACES = 100_000;
/** Key of the default budget every trace gets. */
export const EACH_TRACE = "trace:*";

function emptyUsage(): BudgetUsage {
  return { tokens: 0, microUsd: 0, toolCalls: 0, reserved: { tokens: 0, microUsd: 0, toolCalls: 0 }, open: 0, approvals: 0, sent: [] };
}

/** The budget keys an action of `actor` for `principal` in `trace` falls under. */
export function budgetKeys(actor: string, principal: string, trace: TraceId | string): string[] {
  if (actor === principal) return [`principal:${principal}`, `trace:${trace}`];
  return [`agent:${actor}`, `principal:${principal}`, `trace:${trace}`];
}

function describe(key: string): string {
  const colon = key.indexOf(":");
  return `${key.slice(0, colon)} ${key.slice(colon + 1)}`;
}

export class Budgets {
  readonly limits = new Map<string, BudgetLimits>();
  readonly usage = new Map<string, BudgetUsage>();
  /** Live only (never part of a replayed state): charges decided whose events are not stored yet. */
  readonly provisional = new Map<string, Provisional>();

  setLimits(scope: BudgetScope, name: string, limits: BudgetLimits): void {
    const key = scope === "trace" ? EACH_TRACE : `${scope}:${name}`;
    if (Object.keys(limits).length === 0) this.limits.delete(key);
    else this.limits.set(key, limits);
  }

  limitsOf(key: string): BudgetLimits | undefined {
    return this.limits.get(key) ?? (key.startsWith("trace:") ? this.limits.get(EACH_TRACE) : undefined);
  }

  private traces = 0;

  /** Puts back usage saved from another Budgets (a snapshot), in its order. */
  restoreUsage(entries: Iterable<[string, BudgetUsage]>): void {
    this.usage.clear();
    this.traces = 0;
    for (const [key, usage] of entries) {
      this.usage.set(key, usage);
      if (key.startsWith("trace:")) this.traces += 1;
    }
  }

  private use(key: string): BudgetUsage {
    let u = this.usage.get(key);
    if (!u) {
      u = emptyUsage();
      if (key.startsWith("trace:")) {
        if (this.traces >= MAX_TRACES) {
          for (const k of this.usage.keys()) {
            if (k.startsWith("trace:")) {
              this.usage.delete(k);
              this.traces -= 1;
              break;
            }
          }
        }
        this.traces += 1;
      }
      this.usage.set(key, u);
    }
    return u;
  }

  /** Trace usage is only kept while some budget limits traces (there can be millions of them). */
  private tracked(key: string): boolean {
    return !key.startsWith("trace:") || this.limits.has(EACH_TRACE);
  }

  // ------------------------------------------------------------ projection (called by evolve)

  onMessage(actor: string, principal: string, trace: TraceId, at: number, request: boolean): void {
    for (const key of budgetKeys(actor, principal, trace)) {
      if (!this.tracked(key)) continue;
      const u = this.use(key);
      if (request) u.open += 1;
      if (this.limitsOf(key)?.messagesPerMinute !== undefined) {
        u.sent.push(at);
        while (u.sent.length > 0 && (u.sent[0] as number) <= at - MINUTE_MS) u.sent.shift();
      }
    }
  }

  onRequestClosed(actor: string, principal: string, trace: TraceId): void {
    for (const key of budgetKeys(actor, principal, trace)) {
      const u = this.usage.get(key);
      if (u && u.open > 0) u.open -= 1;
    }
  }

  onEffectStarted(keys: readonly string[], reserved: Reservation | undefined): void {
    for (const key of keys) {
      if (!this.tracked(key)) continue;
      const u = this.use(key);
      u.open += 1;
      if (reserved) add(u.reserved, reserved, 1);
    }
  }

  onEffectCompleted(keys: readonly string[], reserved: Reservation | undefined, spent: Reservation | undefined): void {
    for (const key of keys) {
      const u = this.usage.get(key);
      if (!u) continue;
      if (u.open > 0) u.open -= 1;
      if (reserved) add(u.reserved, reserved, -1);
      if (spent) {
        u.tokens += spent.tokens ?? 0;
        u.microUsd += spent.microUsd ?? 0;
        u.toolCalls += spent.toolCalls ?? 0;
      }
    }
  }

  onApprovalOpened(keys: readonly string[]): void {
    for (const key of keys) if (this.tracked(key)) this.use(key).approvals += 1;
  }

  onApprovalClosed(keys: readonly string[]): void {
    for (const key of keys) {
      const u = this.usage.get(key);
      if (u && u.approvals > 0) u.approvals -= 1;
    }
  }

  // ------------------------------------------------------------ provisional charges (kernel only)

  hold(charge: Charge): void {
    this.applyProvisional(charge, 1);
  }

  release(charge: Charge): void {
    this.applyProvisional(charge, -1);
  }

  private applyProvisional(charge: Charge, sign: 1 | -1): void {
    for (const key of charge.keys) {
      let p = this.provisional.get(key);
      if (!p) {
        p = { reserved: { tokens: 0, microUsd: 0, toolCalls: 0 }, open: 0, approvals: 0, messages: 0, charges: 0 };
        this.provisional.set(key, p);
      }
      if (charge.reserve) add(p.reserved, charge.reserve, sign);
      if (charge.message) p.messages += sign;
      if (charge.open) p.open += sign;
      if (charge.approval) p.approvals += sign;
      p.charges += sign;
      if (p.charges <= 0) this.provisional.delete(key);
    }
  }

  // ------------------------------------------------------------ decisions

  /** Why `ask` would exceed one of the budgets `keys` fall under, or undefined when it fits. */
  check(keys: readonly string[], ask: BudgetAsk): WireError | undefined {
    for (const key of keys) {
      const limits = this.limitsOf(key);
      if (!limits) continue;
      const u = this.usage.get(key) ?? emptyUsage();
      const p = this.provisional.get(key);
      const who = describe(key);
      const over = (what: string, used: number, asked: number, limit: number): WireError => ({
        code: ErrorCode.BudgetExceeded,
        message: `budget exceeded: ${who} has used or reserved ${used} of ${limit} ${what}; this action needs ${asked} more`,
        detail: { budget: key, what, used, asked, limit },
      });
      if (limits.depth !== undefined && ask.depth > limits.depth) {
        return { code: ErrorCode.BudgetExceeded, message: `budget exceeded: causal depth ${ask.depth} is over the ${limits.depth} hops allowed for ${who} (a message loop?)`, detail: { budget: key, what: "depth", limit: limits.depth } };
      }
      const r = ask.reserve;
      if (r) {
        const pairs: [keyof Reservation, keyof BudgetLimits, string, number][] = [
          ["tokens", "tokens", "tokens", u.tokens],
          ["microUsd", "microUsd", "micro-USD", u.microUsd],
          ["toolCalls", "toolCalls", "tool calls", u.toolCalls],
        ];
        for (const [rk, lk, what, settled] of pairs) {
          const limit = limits[lk];
          const asked = r[rk] ?? 0;
          if (limit === undefined || asked === 0) continue;
          const used = settled + u.reserved[rk] + (p?.reserved[rk] ?? 0);
          if (used + asked > limit) return over(what, used, asked, limit);
        }
      }
      if (ask.message && limits.messagesPerMinute !== undefined) {
        const recent = u.sent.filter((t) => t > ask.now - MINUTE_MS).length + (p?.messages ?? 0);
        if (recent + 1 > limits.messagesPerMinute) return over("messages in the last minute", recent, 1, limits.messagesPerMinute);
      }
      if (ask.open && limits.concurrent !== undefined) {
        const open = u.open + (p?.open ?? 0);
        if (open + 1 > limits.concurrent) return over("requests and effects outstanding at once", open, 1, limits.concurrent);
      }
      if (ask.approval && limits.pendingApprovals !== undefined) {
        const waiting = u.approvals + (p?.approvals ?? 0);
        if (waiting + 1 > limits.pendingApprovals) return over("approvals waiting for a human", waiting, 1, limits.pendingApprovals);
      }
    }
    return undefined;
  }

  /** Every key with a limit or any usage, for `maxwell budget`. */
  report(): { key: string; limits: BudgetLimits | undefined; usage: BudgetUsage }[] {
    const keys = new Set<string>([...this.limits.keys(), ...[...this.usage.keys()].filter((k) => !k.startsWith("trace:") || this.usage.size < 1000)]);
    return [...keys].sort().map((key) => ({ key, limits: this.limitsOf(key), usage: this.usage.get(key) ?? emptyUsage() }));
  }
}

function add(into: Required<Reservation>, r: Reservation, sign: 1 | -1): void {
  into.tokens += sign * (r.tokens ?? 0);
  into.microUsd += sign * (r.microUsd ?? 0);
  into.toolCalls += sign * (r.toolCalls ?? 0);
}
