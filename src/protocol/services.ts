/**
 * The wire between the kernel and the services behind it (model gateway, tools, memory). Agents
 * never reach a service: they ask the kernel with an effect syscall (`llm`, `tool`, `mem`); the
 * kernel decides, records the intent in the log, calls the service with a {@link ServiceCall} on
 * `mx.svc.<service>.<op>`, records the {@link ServiceReply}, and only then answers the agent.
 *
 * A service's credential may only subscribe to its own subjects and answer the requests it gets
 * (NATS `allow_responses`); it cannot publish anywhere else.
 */
import type { WireError } from "./errors.js";
import type { EventId, TraceId } from "./ids.js";
import { PREFIX, assertName } from "./subjects.js";

/** The services the kernel calls. */
export const ServiceName = { Llm: "llm", Tools: "tools", Memory: "memory" } as const;
export type ServiceName = (typeof ServiceName)[keyof typeof ServiceName];

export const serviceSubjects = {
  /** Where the kernel calls `op` on `service`. */
  call: (service: string, op: string): string => {
    assertName(service, "service name");
    assertName(op, "service operation");
    return `${PREFIX}.svc.${service}.${op}`;
  },
  /** What a service subscribes to. */
  all: (service: string): string => {
    assertName(service, "service name");
    return `${PREFIX}.svc.${service}.>`;
  },
  /** Queue group the instances of one service share. */
  queue: (service: string): string => `mx-svc-${service}`,
  /** Identity name of a service's NATS user and creds file (`<data>/creds/svc-<name>.creds`). */
  identity: (service: string): string => `svc-${service}`,
} as const;

/**
 * Information-flow labels: a sorted set of strings. `untrusted` marks integrity (data that came
 * from outside: the web, a tool's output, a model that read such data); `conf:<class>` marks
 * confidentiality. The labels of a result are the union (join) of its inputs' labels: they only
 * tighten along a causal chain. An absent list means trusted and public.
 */
export type Labels = string[];
export const Label = { Untrusted: "untrusted", confPrefix: "conf:" } as const;

/** Join of label sets: the union, sorted, no duplicates. */
export function joinLabels(...sets: (Labels | undefined)[]): Labels {
  const out = new Set<string>();
  for (const s of sets) if (s) for (const l of s) out.add(l);
  return [...out].sort();
}

/** Token usage a model call reports. */
export interface Usage {
  /** The model that actually answered (after routing). */
  model: string;
  inputTokens: number;
  outputTokens: number;
}

/** What the kernel sends a service. Msgpack-encoded. */
export interface ServiceCall {
  /** Id of the `effect.started` event that records this call: the idempotency key. */
  effect: EventId;
  /** Log sequence of that event: a service that keeps state applies calls in this order. */
  seq: number;
  /** Kernel clock when the call was decided (ms since the epoch): the service's "now". */
  at: number;
  /** Operation, also the last subject token (e.g. `complete`, `call`, `put`). */
  op: string;
  /** The agent on whose syscall this runs, and the principal it works for. */
  actor: string;
  principal: string;
  trace: TraceId;
  /** Model name, tool name, or memory namespace. */
  target: string;
  /** The call's arguments as the agent gave them (after kernel validation). */
  args: unknown;
  /** Labels of everything that influenced the call. */
  labels: Labels;
  /** When the kernel stops waiting (ms since the epoch). */
  deadline: number;
  /** Tools only: sha256 of the manifest the kernel pinned; the service refuses on mismatch. */
  manifest?: string;
  /** Tools only: secret values injected by the kernel at call time, by reference name. */
  secrets?: Record<string, string>;
}

/** What a service answers. Msgpack-encoded. */
export type ServiceReply =
  | {
      ok: true;
      result: unknown;
      /** Labels the service adds to its result (e.g. `untrusted` for fetched web content). */
      labels?: Labels;
      /** Model calls: tokens used, for budget settlement. */
      usage?: Usage;
    }
  | { ok: false; error: WireError };

/** Effect classes of a tool: what calling it may do to the world. */
export const ToolEffect = { Read: "read", Write: "write", Destructive: "destructive", External: "external" } as const;
export type ToolEffect = (typeof ToolEffect)[keyof typeof ToolEffect];

/**
 * A tool's manifest. The kernel pins sha256 of its canonical JSON at registration; a tool whose
 * manifest changes is refused until an operator registers it again.
 */
export interface ToolManifest {
  /** Tool name (an identity-style name: `a-z0-9-_`). */
  name: string;
  version: string;
  description: string;
  /** JSON Schema of the arguments; the kernel validates every call against it. */
  input: Record<string, unknown>;
  /** JSON Schema of the result, when the tool promises one. */
  output?: Record<string, unknown>;
  effect: ToolEffect;
  /** The service that hosts the tool (default `tools`). */
  service?: string;
  /** Whether repeating a call with the same effect id is harmless (retried after a crash). */
  idempotent?: boolean;
  /** Secret references the kernel injects at call time: local name → secret name. */
  secrets?: Record<string, string>;
}

/** Service operation names. */
export const ServiceOp = {
  /** llm: one Messages API call. */
  Complete: "complete",
  /** tools: call a tool; args are the tool's arguments. */
  Call: "call",
  /** tools: list the manifests a tool service hosts. */
  Manifests: "manifests",
} as const;
