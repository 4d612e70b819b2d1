/**
 * The Messages API parameters an agent may send through the gateway, checked before anything
 * is spent: a call the API would refuse is refused here with a `bad_request` naming the field.
 * Only listed fields pass. Fields that would let the model act outside the kernel (server tools,
 * MCP servers, containers) are refused: every tool call must come back to the agent and go
 * through the kernel like any other.
 */
import type { MessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/messages";
import { ErrorCode, MaxwellError } from "./errors.js";

/** The request fields the gateway passes on. `stream` is the gateway's choice, never the agent's. */
const ALLOWED = [
  "model",
  "system",
  "messages",
  "tools",
  "tool_choice",
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "stop_sequences",
  "metadata",
  "thinking",
  "output_config",
] as const;
const allowed: ReadonlySet<string> = new Set(ALLOWED);

/** More output than any model offers: a larger max_tokens is a mistake, not a request. */
const MAX_OUTPUT_TOKENS = 1_000_000;

function refuse(field: string, why: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, `llm call: '${field}' ${why}`, { detail: { field } });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function checkBlocks(value: unknown, field: string): void {
  if (!Array.isArray(value) || value.length === 0) throw refuse(field, "must be a string or a non-empty list of content blocks");
  for (const [i, block] of value.entries()) {
    if (!isObject(block) || typeof block["type"] !== "string") throw refuse(`${field}.${i}`, "must be a content block with a 'type'");
  }
}

function checkMessages(value: unknown): void {
  if (!Array.isArray(value) || value.length === 0) throw refuse("messages", "must be a non-empty list of {role, content}");
  for (const [i, m] of value.entries()) {
    if (!isObject(m)) throw refuse(`messages.${i}`, "must be an object {role, content}");
    if (m["role"] !== "user" && m["role"] !== "assistant") throw refuse(`messages.${i}.role`, "must be 'user' or 'assistant'");
    if (typeof m["content"] !== "string") checkBlocks(m["content"], `messages.${i}.content`);
  }
}

function checkSystem(value: unknown): void {
  if (typeof value === "string") return;
  if (!Array.isArray(value)) throw refuse("system", "must be a string or a list of text blocks");
  for (const [i, block] of value.entries()) {
    if (!isObject(block) || block["type"] !== "text" || typeof block["text"] !== "string") {
      throw refuse(`system.${i}`, "must be a text block {type: 'text', text}");
    }
  }
}

function checkTools(value: unknown): void {
  if (!Array.isArray(value)) throw refuse("tools", "must be a list of tool definitions");
  for (const [i, tool] of value.entries()) {
    if (!isObject(tool) || typeof tool["name"] !== "string" || tool["name"] === "") throw refuse(`tools.${i}.name`, "must name the tool");
    if (tool["type"] !== undefined && tool["type"] !== "custom") {
      throw refuse(
        `tools.${i}.type`,
        `is '${String(tool["type"])}': server tools run outside the kernel and are not allowed; define a custom tool (name, input_schema) and call it through the kernel`,
      );
    }
    if (!isObject(tool["input_schema"])) throw refuse(`tools.${i}.input_schema`, "must be a JSON Schema object");
  }
}

function checkToolChoice(value: unknown): void {
  if (!isObject(value) || !["auto", "any", "tool", "none"].includes(value["type"] as string)) {
    throw refuse("tool_choice", "must be {type: 'auto' | 'any' | 'tool' | 'none'}");
  }
  if (value["type"] === "tool" && (typeof value["name"] !== "string" || value["name"] === "")) throw refuse("tool_choice.name", "must name the tool");
}

function checkFraction(value: unknown, field: string): void {
  if (typeof value !== "number" || !(value >= 0 && value <= 1)) throw refuse(field, "must be a number from 0 to 1");
}

/**
 * Checks a `complete` call's arguments and returns the request to send. `model` may be left out
 * of `args` when the call's target names it; when both are given they must agree.
 */
export function parseCompleteArgs(given: unknown, target: string | undefined): MessageCreateParamsNonStreaming {
  if (!isObject(given)) throw new MaxwellError(ErrorCode.BadRequest, "llm call: args must be a map of Messages API parameters");
  // A field left unset (undefined travels as nil) is absent, not a null value to check.
  const args = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== null && v !== undefined));
  for (const key of Object.keys(args)) {
    if (!allowed.has(key)) {
      const why = key === "stream" ? "is set by the gateway (it always streams)" : `is not a parameter the gateway passes (allowed: ${ALLOWED.join(", ")})`;
      throw refuse(key, why);
    }
  }
  const model = args["model"] ?? target;
  if (typeof model !== "string" || model === "" || model.length > 256) throw refuse("model", "must name a model");
  if (target && args["model"] !== undefined && args["model"] !== target) {
    throw refuse("model", `is '${String(args["model"])}' but the kernel authorized '${target}'`);
  }
  const maxTokens = args["max_tokens"];
  if (typeof maxTokens !== "number" || !Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_OUTPUT_TOKENS) {
    throw refuse("max_tokens", `must be an integer from 1 to ${MAX_OUTPUT_TOKENS}`);
  }
  checkMessages(args["messages"]);
  if (args["system"] !== undefined) checkSystem(args["system"]);
  if (args["tools"] !== undefined) checkTools(args["tools"]);
  if (args["tool_choice"] !== undefined) checkToolChoice(args["tool_choice"]);
  if (args["temperature"] !== undefined) checkFraction(args["temperature"], "temperature");
  if (args["top_p"] !== undefined) checkFraction(args["top_p"], "top_p");
  if (args["top_k"] !== undefined && (typeof args["top_k"] !== "number" || !Number.isInteger(args["top_k"]) || args["top_k"] < 0)) {
    throw refuse("top_k", "must be a non-negative integer");
  }
  const stops = args["stop_sequences"];
  if (stops !== undefined && (!Array.isArray(stops) || !stops.every((s) => typeof s === "string" && s !== ""))) {
    throw refuse("stop_sequences", "must be a list of non-empty strings");
  }
  const metadata = args["metadata"];
  if (metadata !== undefined) {
    if (!isObject(metadata) || Object.keys(metadata).some((k) => k !== "user_id")) throw refuse("metadata", "may hold only 'user_id'");
    if (metadata["user_id"] !== undefined && metadata["user_id"] !== null && typeof metadata["user_id"] !== "string") {
      throw refuse("metadata.user_id", "must be a string");
    }
  }
  if (args["thinking"] !== undefined && (!isObject(args["thinking"]) || typeof args["thinking"]["type"] !== "string")) {
    throw refuse("thinking", "must be {type, ...}");
  }
  if (args["output_config"] !== undefined && !isObject(args["output_config"])) throw refuse("output_config", "must be an object");
  return { ...args, model } as unknown as MessageCreateParamsNonStreaming;
}
