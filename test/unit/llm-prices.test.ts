import { describe, expect, it } from "vitest";
import { OFFLINE_MODEL, costMicroUsd, priceOf } from "../../src/protocol/prices.js";

describe("model prices", () => {
  it("prices a dated snapshot like its family, by the longest matching prefix", () => {
    expect(priceOf("claude-haiku-4-5-20251001")).toEqual({ inputPerMTok: 1, outputPerMTok: 5 });
    expect(priceOf("claude-opus-4-20250514")).toEqual({ inputPerMTok: 15, outputPerMTok: 75 });
    expect(priceOf("claude-opus-4-1-20250805")).toEqual({ inputPerMTok: 15, outputPerMTok: 75 });
    expect(priceOf("claude-opus-4-6")).toEqual({ inputPerMTok: 5, outputPerMTok: 25 });
    expect(priceOf("claude-opus-5-5")).toEqual({ inputPerMTok: 4, outputPerMTok: 20 });
    expect(priceOf("claude-opus-5")).toEqual({ inputPerMTok: 5, outputPerMTok: 25 });
    expect(priceOf("claude-sonnet-4-6")).toEqual({ inputPerMTok: 3, outputPerMTok: 15 });
    expect(priceOf("claude-3-5-haiku-20241022")).toEqual({ inputPerMTok: 0.8, outputPerMTok: 4 });
  });

  it("matches prefixes only at a '-' boundary and knows nothing of unknown models", () => {
    expect(priceOf("claude-opus-40")).toBeUndefined();
    expect(priceOf("gpt-5")).toBeUndefined();
    expect(priceOf("")).toBeUndefined();
    expect(costMicroUsd({ model: "gpt-5", inputTokens: 10, outputTokens: 10 })).toBeUndefined();
  });

  it("gives the offline model a small price that is not zero, so budgets are exercised", () => {
    const price = priceOf(OFFLINE_MODEL);
    expect(price?.inputPerMTok).toBeGreaterThan(0);
    expect(price?.outputPerMTok).toBeGreaterThan(0);
    expect(costMicroUsd({ model: OFFLINE_MODEL, inputTokens: 1, outputTokens: 0 })).toBe(1);
  });

  it("counts millionths of a dollar: dollars per million tokens times tokens", () => {
    expect(costMicroUsd({ model: "claude-sonnet-4-6", inputTokens: 1200, outputTokens: 300 })).toBe(1200 * 3 + 300 * 15);
    expect(costMicroUsd({ model: "claude-opus-4-1", inputTokens: 1_000_000, outputTokens: 1_000_000 })).toBe(90_000_000);
    expect(costMicroUsd({ model: "claude-sonnet-4-6", inputTokens: 0, outputTokens: 0 })).toBe(0);
  });

  it("rounds a fraction of a millionth up, and an exact amount not at all", () => {
    // 3 tokens at $0.80/MTok = 2.4 millionths: charged 3.
    expect(costMicroUsd({ model: "claude-3-5-haiku", inputTokens: 3, outputTokens: 0 })).toBe(3);
    // 10 tokens at $0.10/MTok is exactly 1 millionth, not 2; 7 input and 3 output is 0.7 + 1.5 = 2.2: 3.
    expect(costMicroUsd({ model: "claude-haiku-5-5", inputTokens: 10, outputTokens: 0 })).toBe(1);
    expect(costMicroUsd({ model: "claude-haiku-5-5", inputTokens: 7, outputTokens: 3 })).toBe(3);
    // 4 tokens at $1.25/MTok output = 5 exactly.
    expect(costMicroUsd({ model: "claude-3-haiku", inputTokens: 0, outputTokens: 4 })).toBe(5);
  });

  it("counts a malformed token count as nothing rather than a negative cost", () => {
    expect(costMicroUsd({ model: "claude-sonnet-4-6", inputTokens: -50, outputTokens: Number.NaN })).toBe(0);
  });
});
