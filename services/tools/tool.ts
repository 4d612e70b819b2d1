/**
 * What a tool is to the service that hosts it: a manifest (the contract the kernel pins) and a
 * handler. `defineTool` checks the manifest once, up front, so a malformed tool fails at startup
 * rather than on its first call.
 */
import type { Logger } from "../../src/runtime/logger.js";
import type { EventId, TraceId } from "../../src/protocol/ids.js";
import { validateManifest } from "../../src/protocol/manifest.js";
import type { Labels, ToolEffect, ToolManifest } from "../../src/protocol/services.js";

/** What a handler knows about the call it runs. */
export interface ToolContext {
  /** Id of the kernel's `effect.started` event for this call: unique per call, stable across retries. */
  readonly effect: EventId;
  /** The agent whose syscall this is, and the principal it works for. */
  readonly actor: string;
  readonly principal: string;
  readonly trace: TraceId;
  /** Kernel clock when the call was decided (ms since the epoch). */
  readonly at: number;
  /** When the kernel stops waiting (ms since the epoch); `signal` aborts then. */
  readonly deadline: number;
  /** Aborted at the deadline or when the service stops: pass it to anything that waits. */
  readonly signal: AbortSignal;
  /**
   * Secret values the kernel injected for this call, by the local names of the manifest's
   * `secrets`. Only names the manifest declares are here. Never log or return them.
   */
  readonly secrets: Readonly<Record<string, string>>;
  /** Labels of everything that influenced the call (as the kernel sent them). */
  readonly labels: Labels;
  /** Adds labels to this call's result (e.g. `untrusted` for content from outside). */
  label(...labels: string[]): void;
  /** This call's logger (effect, tool and actor already bound). */
  readonly log: Logger;
}

/** Runs a call. `args` already passed the manifest's input schema. Throw a MaxwellError to refuse. */
export type ToolHandler<A = Record<string, unknown>, R = unknown> = (args: A, ctx: ToolContext) => R | Promise<R>;

/** A tool ready to host: its checked manifest and its handler. */
export interface Tool {
  readonly manifest: ToolManifest;
  /** Labels every result of this tool carries, whatever the call. */
  readonly labels: Labels;
  readonly handler: ToolHandler;
}

export interface ToolDefinition<A, R> {
  manifest: ToolManifest & { effect: ToolEffect };
  /** Labels every result carries (e.g. `["untrusted"]` for a tool that reads the web). */
  labels?: Labels;
  handler: ToolHandler<A, R>;
}

/**
 * Defines a tool. Throws `bad_request` when the manifest is not valid (see `validateManifest`).
 *
 * @example
 * ```ts
 * const shout = defineTool<{ text: string }, { text: string }>({
 *   manifest: {
 *     name: "shout", version: "1.0.0", description: "Upper-cases text", effect: "read", idempotent: true,
 *     input: { type: "object", properties: { text: { type: "string" } }, required: ["text"], additionalProperties: false },
 *   },
 *   handler: (args) => ({ text: args.text.toUpperCase() }),
 * });
 * ```
 */
export function defineTool<A = Record<string, unknown>, R = unknown>(def: ToolDefinition<A, R>): Tool {
  return {
    manifest: validateManifest(def.manifest),
    labels: [...(def.labels ?? [])],
    handler: def.handler as ToolHandler,
  };
}
