import { describe, expect, it } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";
import { parseCompleteArgs } from "../../src/protocol/llm-params.js";

const base = { model: "claude-haiku-4-5", max_tokens: 100, messages: [{ role: "user", content: "hi" }] };

function refusal(args: unknown, target?: string): MaxwellError {
  try {
    parseCompleteArgs(args, target);
  } catch (err) {
    if (err instanceof MaxwellError) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}

describe("llm call arguments", () => {
  it("passes a full Messages API request as it is", () => {
    const args = {
      ...base,
      system: [{ type: "text", text: "be brief" }],
      messages: [
        { role: "user", content: [{ type: "text", text: "weather?" }] },
        { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "forecast", input: {} }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: "sunny" }] },
      ],
      tools: [{ name: "forecast", description: "d", input_schema: { type: "object" } }],
      tool_choice: { type: "tool", name: "forecast" },
      temperature: 0.2,
      top_p: 0.9,
      top_k: 5,
      stop_sequences: ["END"],
      metadata: { user_id: "u-1" },
    };
    expect(parseCompleteArgs(args, "claude-haiku-4-5")).toEqual(args);
  });

  it("takes the model from the call's target when the args leave it out", () => {
    const { model: _model, ...rest } = base;
    expect(parseCompleteArgs(rest, "claude-sonnet-4-6").model).toBe("claude-sonnet-4-6");
  });

  it("refuses a model other than the one the kernel authorized", () => {
    const err = refusal(base, "claude-opus-4-6");
    expect(err.code).toBe("bad_request");
    expect(err.message).toContain("the kernel authorized 'claude-opus-4-6'");
  });

  it.each([
    ["args that are not a map", "hello", "args must be a map"],
    ["no model at all", { max_tokens: 5, messages: base.messages }, "'model'"],
    ["no max_tokens", { model: "m", messages: base.messages }, "'max_tokens'"],
    ["a fractional max_tokens", { ...base, max_tokens: 1.5 }, "'max_tokens'"],
    ["max_tokens of zero", { ...base, max_tokens: 0 }, "'max_tokens'"],
    ["no messages", { ...base, messages: [] }, "'messages'"],
    ["a message with another role", { ...base, messages: [{ role: "system", content: "x" }] }, "'messages.0.role'"],
    ["a message without content", { ...base, messages: [{ role: "user" }] }, "'messages.0.content'"],
    ["a content block without a type", { ...base, messages: [{ role: "user", content: [{ text: "x" }] }] }, "'messages.0.content.0'"],
    ["a system prompt of numbers", { ...base, system: 42 }, "'system'"],
    ["a tool without a schema", { ...base, tools: [{ name: "t" }] }, "'tools.0.input_schema'"],
    ["a tool_choice naming no tool", { ...base, tool_choice: { type: "tool" } }, "'tool_choice.name'"],
    ["a temperature above 1", { ...base, temperature: 1.5 }, "'temperature'"],
    ["an empty stop sequence", { ...base, stop_sequences: [""] }, "'stop_sequences'"],
    ["metadata other than user_id", { ...base, metadata: { email: "a@b" } }, "'metadata'"],
  ])("refuses %s, naming the field", (_what, args, field) => {
    const err = refusal(args);
    expect(err.code).toBe("bad_request");
    expect(err.message).toContain(field);
  });

  it("refuses server tools, which would act outside the kernel", () => {
    const err = refusal({ ...base, tools: [{ type: "web_search_20250305", name: "web_search" }] });
    expect(err.message).toMatch(/server tools run outside the kernel/);
    expect(err.detail).toEqual({ field: "tools.0.type" });
  });

  it("refuses parameters it does not pass on, MCP servers and stream included", () => {
    expect(refusal({ ...base, mcp_servers: [{ url: "https://x" }] }).message).toContain("'mcp_servers' is not a parameter the gateway passes");
    expect(refusal({ ...base, container: "c" }).message).toContain("'container'");
    expect(refusal({ ...base, stream: true }).message).toContain("always streams");
  });
});

describe("unset fields", () => {
  it("treats a field left unset (nil on the wire) as absent", () => {
    const parsed = parseCompleteArgs({ max_tokens: 10, messages: [{ role: "user", content: "hi" }], system: null, temperature: undefined }, "maxwell-offline") as unknown as Record<string, unknown>;
    expect("system" in parsed).toBe(false);
    expect("temperature" in parsed).toBe(false);
  });
});
