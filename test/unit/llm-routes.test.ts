import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_LLM_CONFIG, loadLlmConfig, parseLlmConfig } from "../../services/llm/config.js";
import { routeModel, type Route } from "../../services/llm/routes.js";

describe("llm route table", () => {
  const routes: Route[] = [
    { agent: "summarizer", to: "claude-haiku-4-5" },
    { agent: "research-*", model: "claude-opus-*", to: "claude-sonnet-4-6" },
    { model: "claude-opus-4-?", to: "claude-opus-4-6" },
  ];

  it("sends an agent's calls to the first route that matches it", () => {
    expect(routeModel(routes, "summarizer", "claude-opus-4-7")).toBe("claude-haiku-4-5");
    expect(routeModel(routes, "research-web", "claude-opus-4-7")).toBe("claude-sonnet-4-6");
    expect(routeModel(routes, "coder", "claude-opus-4-7")).toBe("claude-opus-4-6");
  });

  it("leaves the model alone when no route matches", () => {
    expect(routeModel(routes, "research-web", "claude-haiku-4-5")).toBe("claude-haiku-4-5");
    expect(routeModel(routes, "coder", "claude-opus-4-10")).toBe("claude-opus-4-10");
    expect(routeModel([], "anyone", "m")).toBe("m");
  });

  it("treats glob characters only as globs, never as regular expressions", () => {
    expect(routeModel([{ model: "claude.opus", to: "x" }], "a", "claude-opus")).toBe("claude-opus");
    expect(routeModel([{ agent: "a+", to: "x" }], "aa", "m")).toBe("m");
  });
});

describe("llm config", () => {
  it("is the defaults when the file is missing", () => {
    expect(loadLlmConfig(join(tmpdir(), "no-such-dir-mx", "llm.json"))).toEqual(DEFAULT_LLM_CONFIG);
  });

  it("reads routes and settings from the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "mx-llm-"));
    try {
      const path = join(dir, "llm.json");
      writeFileSync(path, JSON.stringify({ routes: [{ agent: "a", to: "claude-haiku-4-5" }], maxRetries: 4, timeoutMs: 1000, baseURL: "http://127.0.0.1:9" }));
      expect(loadLlmConfig(path)).toEqual({ ...DEFAULT_LLM_CONFIG, routes: [{ agent: "a", to: "claude-haiku-4-5" }], maxRetries: 4, timeoutMs: 1000, baseURL: "http://127.0.0.1:9" });
      writeFileSync(path, "{ not json");
      expect(() => loadLlmConfig(path)).toThrow(/cannot read/);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it("refuses an API key in the file: keys come from the environment only", () => {
    expect(() => parseLlmConfig({ apiKey: "sk-ant-xyz" })).toThrow(/ANTHROPIC_API_KEY only/);
    expect(() => parseLlmConfig({ anthropicToken: "t" })).toThrow(/ANTHROPIC_API_KEY only/);
  });

  it.each([
    [{ routes: {} }, "'routes'"],
    [{ routes: [{ agent: "a" }] }, "routes[0].to"],
    [{ routes: [{ to: "m", agnet: "a" }] }, "routes[0].agnet"],
    [{ routes: [{ to: "m", model: "" }] }, "routes[0].model"],
    [{ maxRetries: -1 }, "'maxRetries'"],
    [{ timeoutMs: 0 }, "'timeoutMs'"],
    [{ baseURL: "not a url" }, "'baseURL'"],
    [{ retries: 3 }, "'retries' is not a setting"],
  ])("refuses %j, naming the field", (value, field) => {
    expect(() => parseLlmConfig(value)).toThrow(field);
  });
});
