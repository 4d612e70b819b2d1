/**
 * The offline model: a loopback HTTP server that speaks the Anthropic Messages API
 * (`POST /v1/messages`, JSON and SSE streaming, the API's error bodies and statuses), so the real
 * `@anthropic-ai/sdk` client runs against it in tests and demos and nothing leaves the machine.
 *
 * Answers are scripted: a queue of replies (text, tool_use blocks, errors, delays) or a function
 * of the request. With nothing scripted it answers as the model `maxwell-offline`, saying so.
 *
 * @example
 * ```ts
 * const model = await startOfflineModel();
 * model.script({ content: [{ type: "tool_use", name: "search", input: { q: "nats" } }] });
 * model.script({ error: { status: 429 }, retryAfterMs: 10 }, { content: "done" });
 * const client = new Anthropic({ apiKey: "any", baseURL: model.url });
 * // ... model.requests holds every request body, in order
 * await model.close();
 * ```
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { OFFLINE_MODEL } from "../../src/protocol/prices.js";

export { OFFLINE_MODEL };

/** A content block the offline model can answer with. */
export type OfflineBlock =
  | { type: "text"; text: string }
  | { type: "tool_use"; id?: string; name: string; input: Record<string, unknown> };

/** Why a message stopped, as the Messages API says it. */
export type OfflineStopReason = "end_turn" | "max_tokens" | "stop_sequence" | "tool_use" | "pause_turn" | "refusal";

/** A successful answer. */
export interface OfflineMessage {
  /** A string is one text block. */
  content: string | OfflineBlock[];
  /** Default: `tool_use` when a block is a tool_use, else `end_turn`. */
  stop_reason?: OfflineStopReason;
  stop_sequence?: string | null;
  /** The model the answer names; default: the model the request asked for. */
  model?: string;
  /** Token counts to report; default: an estimate of one token per four characters. */
  usage?: { input_tokens?: number; output_tokens?: number };
  /** Wait this long before answering (to exercise client timeouts). */
  delayMs?: number;
}

/** An error answer, with the API's status, error type and body. */
export interface OfflineError {
  /** `type` defaults to the API's type for the status (429 `rate_limit_error`, 529 `overloaded_error`, ...). */
  error: { status: number; type?: string; message?: string };
  /**
   * Sent as `retry-after` (whole seconds, rounded up) and `retry-after-ms`, which the SDK prefers,
   * so tests need not wait whole seconds. Default for 429: 1000.
   */
  retryAfterMs?: number;
  /**
   * Streaming requests only: answer 200, start the message, then send the error as an SSE `error`
   * event, as the API does when it overloads mid-stream.
   */
  midStream?: boolean;
  delayMs?: number;
}

/** One scripted answer. */
export type OfflineReply = OfflineMessage | OfflineError;

/** A scripted answer, or a function of the request that makes one. */
export type OfflineScript = OfflineReply | ((request: MessagesRequest) => OfflineReply);

/** A request body as the offline model received it (parsed JSON). */
export type MessagesRequest = Record<string, unknown>;

export interface OfflineModelOptions {
  /** Default 0: a free port. The server listens on 127.0.0.1 only. */
  port?: number;
  /** The key requests must carry (`x-api-key` or `Authorization: Bearer`); default: any non-empty key. */
  apiKey?: string;
  /** Answers requests when the script queue is empty; `undefined` falls back to the default answer. */
  respond?: (request: MessagesRequest) => OfflineReply | undefined;
}

export interface OfflineModel {
  /** Base URL for the SDK's `baseURL` (`http://127.0.0.1:<port>`). */
  url: string;
  port: number;
  /** Every request body received on `/v1/messages`, in order, including those answered with errors. */
  requests: MessagesRequest[];
  /** Queues answers; each request takes the next one. */
  script(...replies: OfflineScript[]): void;
  /** How many scripted answers are still queued. */
  pending(): number;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** The API's error type for a status. */
function errorTypeOf(status: number): string {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 402:
      return "billing_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 504:
      return "timeout_error";
    case 529:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

function defaultErrorMessage(status: number): string {
  switch (status) {
    case 429:
      return "Number of request tokens has exceeded your per-minute rate limit (offline model, scripted)";
    case 529:
      return "Overloaded";
    case 500:
      return "Internal server error";
    default:
      return `offline model: scripted error ${status}`;
  }
}

/** The offline model's token estimate: one token per four characters, at least one. */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/** Text of a message's content as the model would read it (blocks other than text as JSON). */
function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return JSON.stringify(content ?? "");
  return content
    .map((block: unknown) => {
      const b = block as Record<string, unknown> | null;
      if (b?.["type"] === "text" && typeof b["text"] === "string") return b["text"];
      if (b?.["type"] === "tool_result") return contentText(b["content"]);
      return JSON.stringify(block);
    })
    .join("\n");
}

function inputText(request: MessagesRequest): string {
  const parts: string[] = [];
  if (request["system"] !== undefined) parts.push(contentText(request["system"]));
  for (const m of request["messages"] as unknown[]) parts.push(contentText((m as Record<string, unknown>)["content"]));
  if (request["tools"] !== undefined) parts.push(JSON.stringify(request["tools"]));
  return parts.join("\n");
}

/** The default answer: a short, clearly marked echo of the last user message. */
function defaultReply(request: MessagesRequest): OfflineMessage {
  const messages = request["messages"] as Record<string, unknown>[];
  const lastUser = [...messages].reverse().find((m) => m["role"] === "user");
  const said = lastUser ? contentText(lastUser["content"]).replace(/\s+/g, " ").trim() : "";
  const words = said === "" ? 0 : said.split(" ").length;
  const excerpt = said.length > 160 ? `${said.slice(0, 157)}...` : said;
  const tools = Array.isArray(request["tools"]) ? request["tools"].length : 0;
  const text =
    `[${OFFLINE_MODEL}] This is Maxwell's offline model, not Claude: no request left this machine. ` +
    `I received ${messages.length} message(s)${tools > 0 ? ` and ${tools} tool(s)` : ""}; ` +
    `the last user message has ${words} word(s): "${excerpt}"`;
  const maxTokens = request["max_tokens"] as number;
  if (estimateTokens(text) > maxTokens) {
    return { content: text.slice(0, maxTokens * 4), stop_reason: "max_tokens", model: OFFLINE_MODEL };
  }
  return { content: text, model: OFFLINE_MODEL };
}

function isError(reply: OfflineReply): reply is OfflineError {
  return "error" in reply;
}

/** Why a request body is not a Messages API request, in the API's words; undefined when it is. */
function invalidRequest(body: unknown): string | undefined {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "body: Input should be an object";
  const b = body as Record<string, unknown>;
  if (typeof b["model"] !== "string" || b["model"] === "") return "model: Field required";
  if (typeof b["max_tokens"] !== "number" || !Number.isInteger(b["max_tokens"]) || b["max_tokens"] < 1) {
    return "max_tokens: Field required (a positive integer)";
  }
  if (!Array.isArray(b["messages"]) || b["messages"].length === 0) return "messages: at least one message is required";
  for (const [i, m] of b["messages"].entries()) {
    const msg = m as Record<string, unknown> | null;
    if (typeof msg !== "object" || msg === null || (msg["role"] !== "user" && msg["role"] !== "assistant")) {
      return `messages.${i}.role: Input should be 'user' or 'assistant'`;
    }
    if (typeof msg["content"] !== "string" && !Array.isArray(msg["content"])) return `messages.${i}.content: Field required`;
  }
  return undefined;
}

/** Splits text into stream deltas of a few words each. */
function textChunks(text: string): string[] {
  const words = text.match(/\S+\s*|\s+/g) ?? [];
  const chunks: string[] = [];
  for (let i = 0; i < words.length; i += 3) chunks.push(words.slice(i, i + 3).join(""));
  return chunks.length > 0 ? chunks : [""];
}

function jsonChunks(json: string): string[] {
  const chunks = [""];
  for (let i = 0; i < json.length; i += 16) chunks.push(json.slice(i, i + 16));
  return chunks;
}

/** Starts the offline model on a loopback port. */
export async function startOfflineModel(opts: OfflineModelOptions = {}): Promise<OfflineModel> {
  const queue: OfflineScript[] = [];
  const requests: MessagesRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let served = 0;

  function later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  function errorBody(type: string, message: string, requestId: string): unknown {
    return { type: "error", error: { type, message }, request_id: requestId };
  }

  function sendError(res: ServerResponse, requestId: string, status: number, type: string, message: string, retryAfterMs?: number): void {
    const headers: Record<string, string> = { "request-id": requestId };
    if (retryAfterMs !== undefined) {
      headers["retry-after"] = String(Math.ceil(retryAfterMs / 1000));
      headers["retry-after-ms"] = String(retryAfterMs);
    }
    sendJson(res, status, errorBody(type, message, requestId), headers);
  }

  /** The full Message for a reply, with ids and usage filled in. */
  function messageOf(reply: OfflineMessage, request: MessagesRequest, n: number): Record<string, unknown> {
    let tool = 0;
    const blocks: OfflineBlock[] = typeof reply.content === "string" ? [{ type: "text", text: reply.content }] : reply.content;
    const content = blocks.map((b) =>
      b.type === "text" ? { type: "text", text: b.text } : { type: "tool_use", id: b.id ?? `toolu_offline_${n}_${++tool}`, name: b.name, input: b.input },
    );
    const outputText = content.map((b) => (b.type === "text" ? b.text : JSON.stringify(b.input))).join("");
    return {
      id: `msg_offline_${String(n).padStart(6, "0")}`,
      type: "message",
      role: "assistant",
      model: reply.model ?? request["model"],
      content,
      stop_reason: reply.stop_reason ?? (content.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn"),
      stop_sequence: reply.stop_sequence ?? null,
      usage: {
        input_tokens: reply.usage?.input_tokens ?? estimateTokens(inputText(request)),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: reply.usage?.output_tokens ?? estimateTokens(outputText),
        service_tier: "standard",
      },
    };
  }

  /** Writes a message as the API's event stream. */
  function stream(res: ServerResponse, requestId: string, message: Record<string, unknown>, failWith?: { type: string; message: string }): void {
    if (res.destroyed) return;
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "request-id": requestId });
    const event = (type: string, data: unknown): void => {
      res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const usage = message["usage"] as Record<string, unknown>;
    event("message_start", {
      type: "message_start",
      message: { ...message, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage, output_tokens: 1 } },
    });
    event("ping", { type: "ping" });
    if (failWith) {
      event("error", { type: "error", error: failWith });
      res.end();
      return;
    }
    for (const [index, block] of (message["content"] as Record<string, unknown>[]).entries()) {
      if (block["type"] === "text") {
        event("content_block_start", { type: "content_block_start", index, content_block: { type: "text", text: "" } });
        for (const text of textChunks(block["text"] as string)) {
          event("content_block_delta", { type: "content_block_delta", index, delta: { type: "text_delta", text } });
        }
      } else {
        event("content_block_start", { type: "content_block_start", index, content_block: { ...block, input: {} } });
        for (const partial_json of jsonChunks(JSON.stringify(block["input"]))) {
          event("content_block_delta", { type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json } });
        }
      }
      event("content_block_stop", { type: "content_block_stop", index });
    }
    event("message_delta", {
      type: "message_delta",
      delta: { stop_reason: message["stop_reason"], stop_sequence: message["stop_sequence"] },
      usage: { output_tokens: usage["output_tokens"] },
    });
    event("message_stop", { type: "message_stop" });
    res.end();
  }

  function nextReply(request: MessagesRequest): OfflineReply {
    const scripted = queue.shift();
    if (scripted !== undefined) return typeof scripted === "function" ? scripted(request) : scripted;
    return opts.respond?.(request) ?? defaultReply(request);
  }

  function answer(res: ServerResponse, request: MessagesRequest, n: number, requestId: string): void {
    const reply = nextReply(request);
    const streaming = request["stream"] === true;
    const go = (): void => {
      if (isError(reply)) {
        const status = reply.error.status;
        const type = reply.error.type ?? errorTypeOf(status);
        const message = reply.error.message ?? defaultErrorMessage(status);
        if (reply.midStream && streaming) {
          stream(res, requestId, messageOf({ content: [] }, request, n), { type, message });
          return;
        }
        sendError(res, requestId, status, type, message, reply.retryAfterMs ?? (status === 429 ? 1000 : undefined));
        return;
      }
      const message = messageOf(reply, request, n);
      if (streaming) stream(res, requestId, message);
      else sendJson(res, 200, message, { "request-id": requestId });
    };
    if (reply.delayMs) later(reply.delayMs, go);
    else go();
  }

  function keyOf(req: IncomingMessage): string | undefined {
    const header = req.headers["x-api-key"];
    if (typeof header === "string" && header !== "") return header;
    const auth = req.headers["authorization"];
    const bearer = typeof auth === "string" ? /^Bearer (.+)$/.exec(auth) : null;
    return bearer?.[1];
  }

  function handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const n = ++served;
    const requestId = `req_offline_${String(n).padStart(6, "0")}`;
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/v1/messages" || req.method !== "POST") {
      sendError(res, requestId, 404, "not_found_error", `offline model: no route ${req.method ?? "?"} ${path ?? ""}`);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      sendError(res, requestId, 400, "invalid_request_error", "The request body is not valid JSON.");
      return;
    }
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) requests.push(parsed as MessagesRequest);
    const key = keyOf(req);
    if (key === undefined || (opts.apiKey !== undefined && key !== opts.apiKey)) {
      sendError(res, requestId, 401, "authentication_error", "invalid x-api-key");
      return;
    }
    if (typeof req.headers["anthropic-version"] !== "string") {
      sendError(res, requestId, 400, "invalid_request_error", "anthropic-version: header is required");
      return;
    }
    const invalid = invalidRequest(parsed);
    if (invalid !== undefined) {
      sendError(res, requestId, 400, "invalid_request_error", invalid);
      return;
    }
    answer(res, parsed as MessagesRequest, n, requestId);
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES && !refused) {
        refused = true;
        sendError(res, `req_offline_refused`, 413, "request_too_large", `Request exceeds the maximum allowed number of bytes (${MAX_BODY_BYTES})`);
        req.destroy();
      }
      if (!refused) chunks.push(chunk);
    });
    req.on("end", () => {
      if (!refused) handle(req, res, Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    script(...replies) {
      queue.push(...replies);
    },
    pending: () => queue.length,
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
