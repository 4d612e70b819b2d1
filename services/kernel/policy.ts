/**
 * The policy decision point: Cedar policies validated against schemas/maxwell.cedarschema,
 * evaluated with cedar-wasm. Default deny; any evaluation error is a deny (Cedar skips a policy
 * whose condition errors, so an erroring `forbid` would otherwise allow). Decisions are cached
 * keyed on everything they read, and the cache is dropped when policies or identities change.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { ErrorCode, MaxwellError, type Decision } from "../../src/protocol/mod.js";
import { schemaPath } from "../../src/runtime/paths.js";

export type CedarAction =
  | "message.send"
  | "message.request"
  | "message.reply"
  | "llm.complete"
  | "tool.call"
  | "memory.read"
  | "memory.write"
  | "approval.decide";

export interface Entity {
  type: "Agent" | "Principal" | "Model" | "Tool" | "MemoryNamespace";
  name: string;
  groups: readonly string[];
  /** Attributes besides `name` (Tool: effect; MemoryNamespace: kind, owner). */
  attrs?: Readonly<Record<string, string>>;
}

export interface DecisionRequest {
  actor: Entity;
  action: CedarAction;
  resource: Entity;
  principal: string;
  depth: number;
  /** Information-flow labels of everything that influenced the action. */
  labels: readonly string[];
  /** Kernel clock (ms since the epoch): policies see its UTC hour and weekday. */
  at: number;
}

export interface LoadedPolicySet {
  hash: string;
  ids: string[];
  text: string;
  /** Policies annotated `@hold("why")`: when one of them permits, a human must decide. */
  holds: ReadonlyMap<string, string>;
}

const NS = "Maxwell";

function uid(e: { type: string; name: string }): { type: string; id: string } {
  return { type: `${NS}::${e.type}`, id: e.name };
}

function entityJson(e: Entity): cedar.EntityJson {
  const attrs: Record<string, string> = e.type === "Agent" || e.type === "Principal" ? { name: e.name } : {};
  if (e.attrs) Object.assign(attrs, e.attrs);
  return {
    uid: { type: `${NS}::${e.type}`, id: e.name },
    attrs,
    parents: e.groups.map((g) => ({ type: `${NS}::Group`, id: g })),
  };
}

function entityKey(e: Entity): string {
  const attrs = e.attrs ? Object.values(e.attrs).join(",") : "";
  return `${e.type}:${e.name}:${e.groups.join(",")}:${attrs}`;
}

const ID_ANNOTATION = /@id\(\s*"([^"]+)"\s*\)/;
const HOLD_ANNOTATION = /@hold\(\s*"([^"]*)"\s*\)/;

/** Prefix the authority check puts on the ids of policies that decided for the principal. */
const PRINCIPAL_SIDE = "principal:";

/** Splits a policy file into policies keyed by their @id (or policyN when unannotated). */
function splitPolicies(text: string): Record<string, string> {
  const parts = cedar.policySetTextToParts(text);
  if (parts.type === "failure") {
    throw new MaxwellError(ErrorCode.BadRequest, `policy set does not parse: ${parts.errors.map((e) => e.message).join("; ")}`);
  }
  const out: Record<string, string> = {};
  parts.policies.forEach((p, i) => {
    const id = ID_ANNOTATION.exec(p)?.[1] ?? `policy${i}`;
    if (out[id] !== undefined) throw new MaxwellError(ErrorCode.BadRequest, `policy set has two policies with @id("${id}")`);
    out[id] = p;
  });
  if (parts.policy_templates.length > 0) {
    throw new MaxwellError(ErrorCode.BadRequest, "policy templates are not supported yet");
  }
  return out;
}

let preparsedSchema = false;

export class PolicyEngine {
  private current: LoadedPolicySet | undefined;
  private readonly cache = new Map<string, Decision>();
  private static readonly CACHE_LIMIT = 100_000;
  private readonly schemaText: string;

  constructor() {
    this.schemaText = readFileSync(schemaPath("maxwell.cedarschema"), "utf8");
    if (!preparsedSchema) {
      const r = cedar.preparseSchema("maxwell", this.schemaText);
      if (r.type === "failure") throw new MaxwellError(ErrorCode.Internal, `Cedar schema does not parse: ${r.errors.map((e) => e.message).join("; ")}`);
      preparsedSchema = true;
    }
  }

  /** The policy set in force. */
  get policySet(): LoadedPolicySet {
    if (!this.current) throw new MaxwellError(ErrorCode.Unavailable, "no policy set loaded");
    return this.current;
  }

  /**
   * Validates `text` against the schema and makes it the set in force. A set that does not
   * parse or validate is refused with the validator's message and the old set stays in force.
   */
  load(text: string): LoadedPolicySet {
    const policies = splitPolicies(text);
    const validation = cedar.validate({
      schema: this.schemaText,
      policies: { staticPolicies: policies },
      validationSettings: { mode: "strict" },
    });
    if (validation.type === "failure") {
      throw new MaxwellError(ErrorCode.BadRequest, `policy set is invalid: ${validation.errors.map((e) => e.message).join("; ")}`);
    }
    if (validation.validationErrors.length > 0) {
      const msgs = validation.validationErrors.map((e) => `${e.policyId}: ${e.error.message}`);
      throw new MaxwellError(ErrorCode.BadRequest, `policy set does not validate against the Maxwell schema: ${msgs.join("; ")}`);
    }
    const hash = createHash("sha256").update(text).digest("hex");
    const id = `pset-${hash.slice(0, 16)}`;
    const pre = cedar.preparsePolicySet(id, { staticPolicies: policies });
    if (pre.type === "failure") {
      throw new MaxwellError(ErrorCode.BadRequest, `policy set does not parse: ${pre.errors.map((e) => e.message).join("; ")}`);
    }
    const holds = new Map<string, string>();
    for (const [pid, ptext] of Object.entries(policies)) {
      const hold = HOLD_ANNOTATION.exec(ptext);
      if (!hold) continue;
      if (!/^\s*(@[^\n]*\n\s*)*permit\s*\(/.test(ptext)) {
        throw new MaxwellError(ErrorCode.BadRequest, `policy ${pid}: @hold belongs on a permit policy (a forbid already denies)`);
      }
      holds.set(pid, hold[1] || "held for a human decision");
    }
    this.current = { hash, ids: Object.keys(policies), text, holds };
    this.cache.clear();
    return this.current;
  }

  /**
   * Why an allowed decision must wait for a human: the reasons of the `@hold` policies among the
   * ones that permitted it, or undefined when none asks for a hold.
   */
  holdReason(decision: Decision): string | undefined {
    const holds = this.current?.holds;
    if (!holds || holds.size === 0 || decision.effect !== "allow") return undefined;
    const reasons: string[] = [];
    for (const p of decision.policies) {
      const id = p.startsWith(PRINCIPAL_SIDE) ? p.slice(PRINCIPAL_SIDE.length) : p;
      const why = holds.get(id);
      if (why !== undefined && !reasons.includes(why)) reasons.push(why);
    }
    return reasons.length > 0 ? reasons.join("; ") : undefined;
  }

  /** Drops cached decisions (identities or their groups changed). */
  invalidate(): void {
    this.cache.clear();
  }

  /** Decides; never throws. Errors of any kind are a deny that names them. */
  decide(req: DecisionRequest): Decision {
    const set = this.current;
    if (!set) return { effect: "deny", policies: [], policySet: "none", errors: ["no policy set loaded"] };
    const { hour, weekday } = clock(req.at);
    const key = `${entityKey(req.actor)}|${req.action}|${entityKey(req.resource)}|${req.principal}|${req.depth}|${req.labels.join(",")}|${hour}|${weekday}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const decision = this.evaluate(set, req);
    if (this.cache.size >= PolicyEngine.CACHE_LIMIT) this.cache.clear();
    this.cache.set(key, decision);
    return decision;
  }

  private evaluate(set: LoadedPolicySet, req: DecisionRequest): Decision {
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        principal: uid(req.actor),
        action: { type: `${NS}::Action`, id: req.action },
        resource: uid(req.resource),
        context: contextOf(req),
        preparsedPolicySetId: `pset-${set.hash.slice(0, 16)}`,
        preparsedSchemaName: "maxwell",
        validateRequest: true,
        entities: req.actor.name === req.resource.name && req.actor.type === req.resource.type ? [entityJson(req.actor)] : [entityJson(req.actor), entityJson(req.resource)],
      });
    } catch (err) {
      return { effect: "deny", policies: [], policySet: set.hash, errors: [`policy evaluation failed: ${String(err)}`] };
    }
    if (answer.type === "failure") {
      return { effect: "deny", policies: [], policySet: set.hash, errors: answer.errors.map((e) => e.message) };
    }
    const { decision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0) {
      return {
        effect: "deny",
        policies: diagnostics.errors.map((e) => e.policyId),
        policySet: set.hash,
        errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
      };
    }
    return { effect: decision, policies: diagnostics.reason, policySet: set.hash };
  }
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/** UTC hour and weekday (0 = Sunday) of a kernel clock reading, without a Date per decision. */
function clock(at: number): { hour: number; weekday: number } {
  // 1970-01-01 was a Thursday (4).
  return { hour: Math.floor(at / HOUR_MS) % 24, weekday: (Math.floor(at / DAY_MS) + 4) % 7 };
}

function contextOf(req: DecisionRequest): cedar.Context {
  const { hour, weekday } = clock(req.at);
  return {
    principal: req.principal,
    depth: req.depth,
    labels: [...req.labels],
    untrusted: req.labels.includes("untrusted"),
    confidential: req.labels.some((l) => l.startsWith("conf:")),
    hour,
    weekday,
  };
}
