/**
 * The MCP bridge's pure parts: how an MCP tool's name becomes a Maxwell tool name, which effect
 * class its annotations suggest, and the `mcp` section of `tools.json`. The bridge against a real
 * MCP server is in test/integration/mcp-bridge.test.ts.
 */
import { describe, expect, it } from "vitest";
import { parseToolsConfig } from "../../services/tools/config.js";
import { mcpEffect, mcpToolName } from "../../services/tools/mcp.js";

describe("mcpToolName", () => {
  it.each([
    ["github", "create_issue", "github-create_issue"],
    ["fs", "Read.File", "fs-read-file"],
    ["fs", "list  directory/", "fs-list-directory"],
    ["x", "--weird--", "x-weird"],
    ["x", "日本", undefined],
    ["x", "...", undefined],
    ["x", "a".repeat(62), "x-" + "a".repeat(62)],
    ["x", "a".repeat(63), undefined],
  ])("names %s's tool %j %j", (prefix, tool, expected) => {
    expect(mcpToolName(prefix, tool)).toBe(expected);
  });
});

describe("mcpEffect", () => {
  it.each([
    [undefined, "write"],
    [{}, "write"],
    [{ readOnlyHint: true }, "read"],
    [{ readOnlyHint: true, openWorldHint: false }, "read"],
    [{ readOnlyHint: true, openWorldHint: true }, "external"],
    [{ destructiveHint: true }, "destructive"],
    [{ destructiveHint: true, openWorldHint: true }, "destructive"],
    [{ readOnlyHint: true, destructiveHint: true }, "read"],
    [{ destructiveHint: false, openWorldHint: false }, "write"],
    [{ openWorldHint: true }, "external"],
  ])("classes annotations %j as %s", (annotations, effect) => {
    expect(mcpEffect(annotations)).toBe(effect);
  });
});

describe("tools.json mcp section", () => {
  const dataDir = "/srv/maxwell";

  it("defaults to no MCP servers", () => {
    expect(parseToolsConfig({}, dataDir).mcp).toEqual([]);
  });

  it("reads stdio and HTTP servers, resolving a relative cwd against the data directory", () => {
    const config = parseToolsConfig(
      {
        mcp: [
          { name: "fs", command: "npx", args: ["-y", "server-filesystem"], env: { LOG: "1" }, cwd: "mcp", effects: { write_file: "write" }, labels: ["untrusted"], startTimeoutMs: 5000 },
          { name: "web", url: "https://mcp.example.com/mcp" },
        ],
      },
      dataDir,
    );
    expect(config.mcp).toEqual([
      { name: "fs", command: "npx", args: ["-y", "server-filesystem"], env: { LOG: "1" }, cwd: "/srv/maxwell/mcp", effects: { write_file: "write" }, labels: ["untrusted"], startTimeoutMs: 5000 },
      { name: "web", url: "https://mcp.example.com/mcp" },
    ]);
  });

  it.each([
    ["neither command nor url", [{ name: "a" }], /field 'mcp\.0': MCP server 'a' needs either 'command' \(stdio\) or 'url'/],
    ["both command and url", [{ name: "a", command: "x", url: "http://h/" }], /needs either 'command'/],
    ["args with a url", [{ name: "a", url: "http://h/", args: ["x"] }], /'args', 'env' and 'cwd' are for a 'command'/],
    ["two servers with one name", [{ name: "a", command: "x" }, { name: "a", command: "y" }], /field 'mcp\.1': two MCP servers are named 'a'/],
    ["a name that cannot prefix tool names", [{ name: "GitHub", command: "x" }], /field 'mcp\.0\.name' must match pattern/],
    ["an effect class that does not exist", [{ name: "a", command: "x", effects: { t: "harmless" } }], /field 'mcp\.0\.effects\.t' must be equal to one of the allowed values/],
    ["an unknown field", [{ name: "a", command: "x", headers: {} }], /field 'mcp\.0' has an unknown field 'headers'/],
    ["a url that is not http", [{ name: "a", url: "file:///etc/passwd" }], /field 'mcp\.0\.url' must match pattern/],
  ])("refuses %s", (_what, mcp, message) => {
    expect(() => parseToolsConfig({ mcp }, dataDir)).toThrow(message);
  });
});
