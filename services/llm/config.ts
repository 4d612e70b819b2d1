/**
 * The gateway's configuration file, `<data>/llm.json`: the route table and how to reach the
 * Messages API. It never holds the API key: that comes from `ANTHROPIC_API_KEY` only, so no
 * file an agent's tools could read contains it.
 *
 * ```json
 * {
 *   "routes": [{ "agent": "summarizer", "to": "claude-haiku-4-5" }, { "model": "claude-opus-*", "to": "claude-sonnet-4-6" }],
 *   "maxRetries": 3,
 *   "timeoutMs": 120000
 * }
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import type { Route } from "./routes.js";

export interface LlmConfig {
  routes: Route[];
  /** Messages API base URL (a proxy, say); default the SDK's (`https://api.anthropic.com`). */
  baseURL?: string;
  /** Retries of a call the API answered with 408, 409, 429 or 5xx, with backoff. Default 2. */
  maxRetries: number;
  /** Longest a call may take, retries included, whatever the kernel's deadline. Default 10 minutes. */
  timeoutMs: number;
  /** Largest call the gateway accepts, in bytes of msgpack. Default 1 MiB. */
  maxRequestBytes: number;
}

export const DEFAULT_LLM_CONFIG: Readonly<LlmConfig> = {
  routes: [],
  maxRetries: 2,
  timeoutMs: 600_000,
  maxRequestBytes: 1024 * 1024,
};

const KEYS = new Set(["routes", "baseURL", "maxRetries", "timeoutMs", "maxRequestBytes"]);

function refuse(where: string, why: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, `llm config: ${where} ${why}`, { detail: { field: where } });
}

function nonEmptyString(value: unknown): value is string {
  return typeof value === "string" && value !== "";
}

function wholeNumber(value: unknown, where: string, min: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) throw refuse(where, `must be an integer of at least ${min}`);
  return value;
}

/** Checks a parsed config; throws a `bad_request` MaxwellError naming the first bad field. */
export function parseLlmConfig(value: unknown): LlmConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw refuse("the file", "must hold a JSON object");
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) {
    if (key === "apiKey" || /key|token|secret/i.test(key)) {
      throw refuse(`'${key}'`, "is not allowed: the API key comes from ANTHROPIC_API_KEY only, never from a file");
    }
    if (!KEYS.has(key)) throw refuse(`'${key}'`, `is not a setting (known: ${[...KEYS].join(", ")})`);
  }
  const config: LlmConfig = { ...DEFAULT_LLM_CONFIG, routes: [] };
  if (v["routes"] !== undefined) {
    if (!Array.isArray(v["routes"])) throw refuse("'routes'", "must be a list of {agent?, model?, to}");
    for (const [i, r] of v["routes"].entries()) {
      const route = r as Record<string, unknown> | null;
      if (typeof route !== "object" || route === null || Array.isArray(route)) throw refuse(`routes[${i}]`, "must be an object");
      for (const key of Object.keys(route)) if (!["agent", "model", "to"].includes(key)) throw refuse(`routes[${i}].${key}`, "is not a route field (agent, model, to)");
      if (!nonEmptyString(route["to"])) throw refuse(`routes[${i}].to`, "must name the model to call");
      for (const key of ["agent", "model"]) {
        if (route[key] !== undefined && !nonEmptyString(route[key])) throw refuse(`routes[${i}].${key}`, "must be a non-empty glob");
      }
      config.routes.push({
        ...(route["agent"] !== undefined ? { agent: route["agent"] as string } : {}),
        ...(route["model"] !== undefined ? { model: route["model"] as string } : {}),
        to: route["to"],
      });
    }
  }
  if (v["baseURL"] !== undefined) {
    if (!nonEmptyString(v["baseURL"]) || !URL.canParse(v["baseURL"])) throw refuse("'baseURL'", "must be a URL");
    config.baseURL = v["baseURL"];
  }
  if (v["maxRetries"] !== undefined) config.maxRetries = wholeNumber(v["maxRetries"], "'maxRetries'", 0);
  if (v["timeoutMs"] !== undefined) config.timeoutMs = wholeNumber(v["timeoutMs"], "'timeoutMs'", 1);
  if (v["maxRequestBytes"] !== undefined) config.maxRequestBytes = wholeNumber(v["maxRequestBytes"], "'maxRequestBytes'", 1);
  return config;
}

/** Reads the config file; a missing file is the defaults, an unreadable or invalid one an error. */
export function loadLlmConfig(path: string): LlmConfig {
  if (!existsSync(path)) return { ...DEFAULT_LLM_CONFIG, routes: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, `llm config: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseLlmConfig(parsed);
}
