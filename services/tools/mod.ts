/**
 * Tool services: a small library for hosting tools behind the kernel, the built-in tools, and the
 * bridge that hosts an MCP server's tools the same way.
 * Agents never reach a tool; the kernel pins each tool's manifest hash at registration, decides
 * every call, and calls the service with a `ServiceCall` on `mx.svc.tools.call`. The service
 * refuses a call whose pinned hash is not the hosted manifest's, checks the arguments against the
 * input schema, runs the handler under the call's deadline, and answers `{ ok, result, labels }`.
 *
 * @example
 * ```ts
 * import { ToolService, defineTool } from "./mod.js";
 * const shout = defineTool<{ text: string }>({
 *   manifest: {
 *     name: "shout", version: "1.0.0", description: "Upper-cases text", effect: "read", idempotent: true,
 *     input: { type: "object", properties: { text: { type: "string" } }, required: ["text"], additionalProperties: false },
 *   },
 *   handler: (args) => ({ text: args.text.toUpperCase() }),
 * });
 * const service = new ToolService({ servers: url, creds: "<data>/creds/svc-tools.creds", tools: [shout], log });
 * await service.start();
 * ```
 */
export { defineTool } from "./tool.js";
export type { Tool, ToolContext, ToolDefinition, ToolHandler } from "./tool.js";
export { ToolHost } from "./host.js";
export type { ToolHostOptions } from "./host.js";
export { ToolService } from "./service.js";
export type { ToolServiceOptions } from "./service.js";
export { Workspace, EntryType, splitWorkspacePath } from "./workspace.js";
export type { ListedEntry, ReadResult, WriteOptions } from "./workspace.js";
export { FILE_DEFAULTS, fileTools } from "./file-tools.js";
export type { FileToolLimits } from "./file-tools.js";
export { FETCH_DEFAULTS, checkUrl, hostAllowed, httpFetchTool } from "./http-fetch.js";
export type { FetchConfig } from "./http-fetch.js";
export { DEMO_TABLES, ToyDatabase, databaseTools, passwordHash } from "./toy-database.js";
export type { DatabaseConfig, Row } from "./toy-database.js";
export { builtinTools, loadToolsConfig, parseToolsConfig } from "./config.js";
export type { ToolsConfig } from "./config.js";
export { mcpEffect, mcpToolName, mcpTools, startMcpServers } from "./mcp.js";
export type { McpBridge, McpServerConfig } from "./mcp.js";
