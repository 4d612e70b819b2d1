/** How `maxwell log` shows an event to a person: one line, the facts that matter first. */
import type { LogEvent } from "../protocol/mod.js";

function time(at: number): string {
  return new Date(at).toISOString().slice(11, 23);
}

function short(value: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) return "";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function formatEvent(e: LogEvent): string {
  const head = `#${String(e.seq).padEnd(6)} ${time(e.at)}  `;
  switch (e.type) {
    case "message":
      return `${head}${e.kind.padEnd(8)} ${e.actor} → ${e.to}  for ${e.principal}  allow [${e.decision.policies.join(",")}]  trace ${e.trace.slice(0, 8)}  ${short(e.body)}`;
    case "reply":
      return `${head}reply    ${e.actor} → ${e.to}  for ${e.principal}  ${e.error ? `error ${e.error.code}: ${e.error.message}` : short(e.body)}  trace ${e.trace.slice(0, 8)}`;
    case "decision.denied":
      return `${head}DENIED   ${e.actor} ${e.op}${e.to ? ` → ${e.to}` : ""}  for ${e.principal}  ${e.error.code}: ${e.error.message}`;
    case "input.rejected":
      return `${head}REJECTED ${e.actor ?? "?"} on ${e.subject} (${e.size} bytes)  ${e.error.code}: ${e.error.message}`;
    case "record":
      return `${head}record   ${e.actor}  observed ${e.observed.map((o) => `${o.kind}=${o.value}`).join(" ")}`;
    case "identity.registered":
      return `${head}identity ${e.kind} ${e.name}${e.groups.length ? ` groups=${e.groups.join(",")}` : ""}  key ${e.publicKey.slice(0, 12)}…`;
    case "policy.loaded":
      return `${head}policy   set ${e.policySet.slice(0, 12)}… in force: ${e.policies.join(", ")}`;
    case "checkpoint":
      return `${head}checkpoint up to #${e.upTo} head ${e.head.slice(0, 12)}… signed`;
    case "kernel.genesis":
      return `${head}genesis  kernel key ${e.kernelKey}`;
    case "kernel.fork":
      return `${head}FORK     of #1..#${e.upTo} (kernel key ${e.parentKey.slice(0, 12)}…): kernel key ${e.kernelKey} from here on, ${Object.keys(e.identities).length} credentials reissued`;
    case "agent.controlled":
      return `${head}control  ${e.agent} is now ${e.state.toUpperCase()}${e.reason ? `: ${e.reason}` : ""}`;
    case "effect.started":
      return `${head}${e.kind.padEnd(8)} ${e.actor} → ${e.target} ${e.op}  for ${e.principal}  allow [${e.decision.policies.join(",")}]${labels(e.labels)}${e.approval ? `  approved ${e.approval.slice(-8)}` : ""}  ${short(e.args)}${byHash(e.blobs)}`;
    case "effect.completed":
      return `${head}result   ${e.actor} ← ${e.target}  ${e.error ? `error ${e.error.code}: ${e.error.message}` : short(e.result)}${byHash(e.blobs)}${labels(e.labels)}${e.usage ? `  tokens ${e.usage.inputTokens}+${e.usage.outputTokens} (${e.usage.model})` : ""}${e.redactions ? `  REDACTED ${e.redactions}` : ""}`;
    case "budget.set":
      return `${head}budget   ${e.scope} ${e.name}: ${Object.keys(e.limits).length ? short(e.limits) : "cleared"}`;
    case "approval.requested":
      return `${head}HELD     ${e.actor} ${e.op}${e.request.to ? ` → ${e.request.to}` : ""}  for ${e.principal}  approval ${e.id}: ${e.reason}${labels(e.labels)}  expires ${new Date(e.expiresAt).toISOString()}`;
    case "approval.decided":
      return `${head}${e.verdict === "approve" ? "APPROVED" : "REFUSED "} ${e.approval} by ${e.by}${e.reason ? `: ${e.reason}` : ""}`;
    case "tool.registered":
      return `${head}tool     ${e.manifest.name}@${e.manifest.version} (${e.manifest.effect}) pinned ${e.hash.slice(0, 12)}…`;
    case "blob":
      return `${head}blob     ${e.size} bytes stored by hash ${e.hash.slice(0, 12)}…`;
  }
}

/** Parts of an effect stored by content hash, e.g. `  +2 by hash (#812,#813)`. */
function byHash(blobs: Record<string, { seq: number }> | undefined): string {
  const refs = Object.values(blobs ?? {});
  return refs.length > 0 ? `  +${refs.length} by hash (${refs.map((r) => `#${r.seq}`).join(",")})` : "";
}

function labels(l: string[] | undefined): string {
  return l && l.length > 0 ? `  labels ${l.join(",")}` : "";
}

/** Whether an event concerns `name` (as actor, target, or registered identity). */
export function involves(e: LogEvent, name: string): boolean {
  const r = e as unknown as Record<string, unknown>;
  return r["actor"] === name || r["to"] === name || r["name"] === name || r["agent"] === name;
}
