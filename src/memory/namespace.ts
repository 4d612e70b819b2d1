/**
 * Memory namespaces: every record lives in exactly one, named `<kind>:<name>`. The kind says
 * whose memory it is (an agent's private one, a principal's, or a shared one granted by policy);
 * the name follows the identity-name rules of src/protocol/subjects.ts, so no path separator,
 * wildcard, dot, whitespace or control character can reach a namespace, an LMDB key, a Cedar
 * entity id or a file name built from it.
 */
import { ErrorCode, MaxwellError, isName } from "../protocol/mod.js";

declare const brand: unique symbol;

/** A validated namespace id, e.g. `agent:worker-1`. Obtain one from {@link parseNamespace}. */
export type NamespaceId = string & { readonly [brand]: "NamespaceId" };

/** Whose memory a namespace is. */
export const NamespaceKind = {
  Agent: "agent",
  Principal: "principal",
  Shared: "shared",
} as const;
export type NamespaceKind = (typeof NamespaceKind)[keyof typeof NamespaceKind];

const kinds: ReadonlySet<string> = new Set(Object.values(NamespaceKind));

/** Longest namespace id: the longest kind, `:`, and a 64-character name. */
export const MAX_NAMESPACE_LENGTH = "principal:".length + 64;

const RULE = "use <kind>:<name> with kind agent, principal or shared and a name of 1-64 characters from a-z, 0-9, '-', '_', starting with a letter";

/** Why `value` is not a namespace id, or undefined when it is one. */
function problem(value: unknown): string | undefined {
  if (typeof value !== "string") return `expected a string, got ${value === null ? "null" : typeof value}`;
  if (value.length === 0) return "it is empty";
  if (value.length > MAX_NAMESPACE_LENGTH) return `it is longer than ${MAX_NAMESPACE_LENGTH} characters`;
  if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(value)) return "control characters are not allowed";
  if (/[/\\]/.test(value)) return "path separators are not allowed";
  if (/[*>?]/.test(value)) return "wildcards are not allowed";
  const colon = value.indexOf(":");
  if (colon < 0) return "it has no kind prefix";
  const kind = value.slice(0, colon);
  if (!kinds.has(kind)) return `unknown kind ${JSON.stringify(kind)}`;
  if (!isName(value.slice(colon + 1))) return "the name is not a valid identity name";
  return undefined;
}

/** Whether `value` is a valid namespace id. */
export function isNamespace(value: unknown): value is NamespaceId {
  return problem(value) === undefined;
}

/** Parses a namespace id; throws a `bad_request` MaxwellError saying what is wrong with it. */
export function parseNamespace(value: unknown): NamespaceId {
  const why = problem(value);
  if (why !== undefined) {
    const shown = typeof value === "string" ? JSON.stringify(value) : typeof value;
    throw new MaxwellError(ErrorCode.BadRequest, `invalid namespace ${shown}: ${why}; ${RULE}`, {
      detail: { field: "namespace" },
    });
  }
  return value as NamespaceId;
}

/** The namespace of `kind` named `name` (validated). */
export function namespaceOf(kind: NamespaceKind, name: string): NamespaceId {
  return parseNamespace(`${kind}:${name}`);
}

/** The kind and name of a namespace id. */
export function namespaceParts(ns: NamespaceId): { kind: NamespaceKind; name: string } {
  const colon = ns.indexOf(":");
  return { kind: ns.slice(0, colon) as NamespaceKind, name: ns.slice(colon + 1) };
}
