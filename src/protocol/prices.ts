/**
 * What model calls cost: a price per model in US dollars per million tokens, and the cost of a
 * call's {@link Usage} in millionths of a dollar (the unit budgets count in). Pure: the kernel
 * uses it to reserve and settle budgets, the CLI to show spending.
 *
 * @example
 * ```ts
 * costMicroUsd({ model: "claude-sonnet-4-6", inputTokens: 1200, outputTokens: 300 }); // 8100
 * ```
 */
import type { Usage } from "./services.js";

/** The price of one model: US dollars per million input and output tokens. */
export interface ModelPrice {
  inputPerMTok: number;
  outputPerMTok: number;
}

/** The name of the offline Messages API model (tests and demos without an API key). */
export const OFFLINE_MODEL = "maxwell-offline";

/**
 * List prices from Anthropic's pricing page (platform.claude.com/docs/en/about-claude/pricing).
 * Keys are model-id prefixes; the longest that matches wins, so a dated snapshot
 * (`claude-haiku-4-5-20251001`) or a new minor version of a family is priced like its family.
 * Cache writes and reads are priced as base input: the gateway folds them into `inputTokens`.
 */
const PRICES: Readonly<Record<string, ModelPrice>> = {
  "claude-fable-5": { inputPerMTok: 10, outputPerMTok: 50 },
  "claude-mythos-5": { inputPerMTok: 10, outputPerMTok: 50 },
  "claude-opus-5": { inputPerMTok: 5, outputPerMTok: 25 },
  "claude-opus-5-5": { inputPerMTok: 4, outputPerMTok: 20 },
  "claude-opus-4": { inputPerMTok: 15, outputPerMTok: 75 },
  "claude-opus-4-1": { inputPerMTok: 15, outputPerMTok: 75 },
  "claude-opus-4-5": { inputPerMTok: 5, outputPerMTok: 25 },
  "claude-opus-4-6": { inputPerMTok: 5, outputPerMTok: 25 },
  "claude-opus-4-7": { inputPerMTok: 5, outputPerMTok: 25 },
  "claude-opus-4-8": { inputPerMTok: 5, outputPerMTok: 25 },
  "claude-sonnet-5": { inputPerMTok: 2, outputPerMTok: 10 },
  "claude-sonnet-4": { inputPerMTok: 3, outputPerMTok: 15 },
  // Haiku 5.5's lower band (prompts up to 100k tokens); longer prompts cost $0.50 / $2.50.
  "claude-haiku-5": { inputPerMTok: 0.1, outputPerMTok: 0.5 },
  "claude-haiku-4": { inputPerMTok: 1, outputPerMTok: 5 },
  "claude-3-opus": { inputPerMTok: 15, outputPerMTok: 75 },
  "claude-3-7-sonnet": { inputPerMTok: 3, outputPerMTok: 15 },
  "claude-3-5-sonnet": { inputPerMTok: 3, outputPerMTok: 15 },
  "claude-3-5-haiku": { inputPerMTok: 0.8, outputPerMTok: 4 },
  "claude-3-haiku": { inputPerMTok: 0.25, outputPerMTok: 1.25 },
  // A demo price, small but not zero, so budgets are exercised without a key.
  [OFFLINE_MODEL]: { inputPerMTok: 1, outputPerMTok: 5 },
};

/**
 * The price of `model`: the entry whose key is the longest prefix of the id ending at a `-`
 * boundary (`claude-opus-4` prices `claude-opus-4-20250514` but not `claude-opus-40`), or
 * undefined when no entry matches.
 */
export function priceOf(model: string): ModelPrice | undefined {
  let best: string | undefined;
  for (const key of Object.keys(PRICES)) {
    if (model !== key && !model.startsWith(`${key}-`)) continue;
    if (best === undefined || key.length > best.length) best = key;
  }
  return best === undefined ? undefined : PRICES[best];
}

/** Dollars per million tokens is millionths of a dollar per token; thousandths of that fit every list price as an integer. */
const SUB_UNITS = 1000;

/** A token count as a whole number: fractions round up; negative, NaN and infinite counts are zero. */
function tokens(count: number): number {
  return Number.isFinite(count) && count > 0 ? Math.ceil(count) : 0;
}

/**
 * What `usage` cost in millionths of a US dollar, rounded up to a whole one; undefined when the
 * model has no price. Computed in integers, so the same usage always costs the same.
 */
export function costMicroUsd(usage: Usage): number | undefined {
  const price = priceOf(usage.model);
  if (price === undefined) return undefined;
  const perInput = Math.round(price.inputPerMTok * SUB_UNITS);
  const perOutput = Math.round(price.outputPerMTok * SUB_UNITS);
  const subUnits = tokens(usage.inputTokens) * perInput + tokens(usage.outputTokens) * perOutput;
  return Math.ceil(subUnits / SUB_UNITS);
}
