/**
 * The policy decision point on its own: the kernel's PolicyEngine with the default policy set,
 * deciding a coordinators -> workers request. Cached = the same request again (a Map lookup on a
 * key of everything the decision reads); uncached = the cache dropped before every decision, so
 * each one is a cedar-wasm statefulIsAuthorized call.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../src/runtime/paths.js";
import { authorize, type AuthorityRequest } from "../services/kernel/authority.js";
import { PolicyEngine, type DecisionRequest } from "../services/kernel/policy.js";
import { summarize, type Latency } from "./stats.js";

export interface PolicyResults {
  policies: number;
  cached: { decisionsPerSec: number; n: number; meanUs: number };
  uncached: { decisionsPerSec: number; latencyUs: Latency };
  /** Distinct keys (varying depth) instead of invalidate(): also uncached. */
  distinctKeys: { decisionsPerSec: number; latencyUs: Latency };
  /** An agent acting for a principal: authorize() asks as both (the kernel's delegated path). */
  delegated: { cachedPerSec: number; uncachedPerSec: number; uncachedUs: Latency };
}

const REQUEST: DecisionRequest = {
  actor: { type: "Agent", name: "bench-a", groups: ["coordinators"] },
  action: "message.request",
  resource: { type: "Agent", name: "bench-b", groups: ["workers"] },
  principal: "bench-a",
  depth: 0,
  labels: [],
  at: Date.UTC(2026, 0, 1),
};

function check(engine: PolicyEngine, req: DecisionRequest): void {
  const d = engine.decide(req);
  if (d.effect !== "allow") throw new Error(`expected allow from the default policies, got ${d.effect}: ${JSON.stringify(d)}`);
}

export function measurePolicy(say: (line: string) => void): PolicyResults {
  const engine = new PolicyEngine();
  const set = engine.load(readFileSync(join(packageRoot, "services", "kernel", "default-policies.cedar"), "utf8"));

  say("policy decisions, uncached (invalidate() before each, N=3000)");
  for (let i = 0; i < 300; i++) {
    engine.invalidate();
    check(engine, REQUEST);
  }
  const uncached: number[] = [];
  let t = performance.now();
  for (let i = 0; i < 3000; i++) {
    const t0 = performance.now();
    engine.invalidate();
    engine.decide(REQUEST);
    uncached.push((performance.now() - t0) * 1000);
  }
  const uncachedPerSec = (3000 * 1000) / (performance.now() - t);

  say("policy decisions, distinct keys (depth 0..63 x principals, N=3000)");
  engine.invalidate();
  const distinct: number[] = [];
  t = performance.now();
  for (let i = 0; i < 3000; i++) {
    const req = { ...REQUEST, principal: `p${Math.floor(i / 64)}`, depth: i % 64 };
    const t0 = performance.now();
    check(engine, req);
    distinct.push((performance.now() - t0) * 1000);
  }
  const distinctPerSec = (3000 * 1000) / (performance.now() - t);

  say("delegated authority with labels (agent for a principal: two questions), N=3000 uncached, 500000 cached");
  const delegatedReq: AuthorityRequest = {
    actor: REQUEST.actor,
    action: REQUEST.action,
    resource: REQUEST.resource,
    onBehalfOf: { type: "Principal", name: "alice", groups: [] },
    principal: "alice",
    depth: 1,
    // Labels on: the context carries them and the cache key includes them.
    labels: ["untrusted"],
    at: REQUEST.at,
  };
  const delegatedUs: number[] = [];
  t = performance.now();
  for (let i = 0; i < 3000; i++) {
    const t0 = performance.now();
    engine.invalidate();
    if (authorize(engine, delegatedReq).decision.effect !== "allow") throw new Error("expected the delegated request to be allowed");
    delegatedUs.push((performance.now() - t0) * 1000);
  }
  const delegatedUncached = (3000 * 1000) / (performance.now() - t);
  t = performance.now();
  for (let i = 0; i < 500_000; i++) authorize(engine, delegatedReq);
  const delegatedCached = (500_000 * 1000) / (performance.now() - t);

  say("policy decisions, cached (same request, N=500000)");
  check(engine, REQUEST);
  const n = 500_000;
  t = performance.now();
  for (let i = 0; i < n; i++) engine.decide(REQUEST);
  const cachedMs = performance.now() - t;

  return {
    policies: set.ids.length,
    cached: { decisionsPerSec: (n * 1000) / cachedMs, n, meanUs: (cachedMs * 1000) / n },
    uncached: { decisionsPerSec: uncachedPerSec, latencyUs: summarize(uncached) },
    distinctKeys: { decisionsPerSec: distinctPerSec, latencyUs: summarize(distinct) },
    delegated: { cachedPerSec: delegatedCached, uncachedPerSec: delegatedUncached, uncachedUs: summarize(delegatedUs) },
  };
}
