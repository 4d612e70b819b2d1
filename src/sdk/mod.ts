/**
 * Maxwell's agent SDK. An agent is its own process holding its own credential; every effect it
 * has goes through the kernel as a syscall.
 *
 * @example
 * ```ts
 * import { defineAgent, main } from "maxwell/sdk";
 *
 * export default defineAgent({
 *   name: "echo",
 *   async onMessage(msg, ctx) {
 *     if (msg.kind === "request") return { echoed: msg.body, at: ctx.now() };
 *   },
 * });
 * ```
 */
export { defineAgent } from "./agent.js";
export type { AgentContext, AgentDefinition, Message, RequestOptions, SendOptions, SendResult } from "./agent.js";
export type { Scope } from "../protocol/events.js";
export { runAgent } from "./runner.js";
export type { RunOptions, RunningAgent } from "./runner.js";
export { main } from "./main.js";
export { fence } from "./spotlight.js";
export { LeftOutReason, MEMORY_HEADING, TRUNCATION_MARK, assembleContext, estimateTokens, renderMemory } from "./context.js";
export type { AssembledContext, ContextMessage, ContextOptions, IncludedItem, LeftOutItem, TextBlock, WorkingItem } from "./context.js";
export type { EffectResult, LlmResponse } from "./agent.js";
export { ErrorCode, MaxwellError } from "../protocol/errors.js";
export type { WireError } from "../protocol/errors.js";
