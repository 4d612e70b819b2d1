/**
 * The authority of an action: the actor's grants intersected with the grants of the principal on
 * whose behalf it acts. When an agent works for a principal, the kernel asks Cedar twice (as the
 * actor, and as the principal) and allows only when both are permitted; a principal acting for
 * itself (or an agent on its own authority) is asked once. Used by live decisions and by the
 * what-if alike, so the two cannot drift apart.
 */
import type { Decision } from "../../src/protocol/mod.js";
import type { CedarAction, Entity, PolicyEngine } from "./policy.js";

/** Prefix of the policy ids that decided the principal's half of a decision. */
export const PRINCIPAL_PREFIX = "principal:";

export interface AuthorityRequest {
  actor: Entity;
  action: CedarAction;
  resource: Entity;
  /** The principal's identity, when it is someone other than the actor. */
  onBehalfOf: Entity | undefined;
  principal: string;
  depth: number;
  labels: readonly string[];
  at: number;
}

/** Whose grants denied, for the error message. */
export type Denier = "actor" | "principal" | undefined;

export function authorize(policy: PolicyEngine, req: AuthorityRequest): { decision: Decision; denier: Denier } {
  const asActor = policy.decide({ actor: req.actor, action: req.action, resource: req.resource, principal: req.principal, depth: req.depth, labels: req.labels, at: req.at });
  if (asActor.effect !== "allow" || !req.onBehalfOf) return { decision: asActor, denier: asActor.effect === "allow" ? undefined : "actor" };
  const asPrincipal = policy.decide({ actor: req.onBehalfOf, action: req.action, resource: req.resource, principal: req.principal, depth: req.depth, labels: req.labels, at: req.at });
  const policies = [...asActor.policies, ...asPrincipal.policies.map((p) => `${PRINCIPAL_PREFIX}${p}`)];
  if (asPrincipal.effect === "allow") return { decision: { effect: "allow", policies, policySet: asActor.policySet }, denier: undefined };
  const decision: Decision = { effect: "deny", policies, policySet: asActor.policySet };
  if (asPrincipal.errors) decision.errors = asPrincipal.errors.map((e) => `${PRINCIPAL_PREFIX}${e}`);
  return { decision, denier: "principal" };
}
