/**
 * `http-fetch` (external): GET or POST to a URL whose host is on the configured allowlist, and
 * nowhere else. Redirects are followed by hand, each one checked against the allowlist like the
 * first URL; the response is cut at a size limit and the whole exchange at a time limit. What comes
 * back is labeled `untrusted`: it is the outside world talking.
 */
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { Label, ToolEffect } from "../../src/protocol/services.js";
import { defineTool, type Tool } from "./tool.js";

export interface FetchConfig {
  /** Hosts that may be fetched: an exact host (`example.com`, `127.0.0.1`) or `*.suffix` (any subdomain of `suffix`, not `suffix` itself). */
  allow: string[];
  /** Most response bytes returned; the rest is cut off (default 256 KiB). */
  maxBytes?: number;
  /** Longest a fetch may take, redirects included (default 15 s). */
  timeoutMs?: number;
  /** Most redirects followed (default 5). */
  maxRedirects?: number;
}

export const FETCH_DEFAULTS = { maxBytes: 256 * 1024, timeoutMs: 15_000, maxRedirects: 5 } as const;

/** Request headers a caller may not set: they would change where the request goes or how it is framed. */
const REFUSED_HEADERS: ReadonlySet<string> = new Set(["host", "connection", "content-length", "transfer-encoding", "upgrade", "proxy-authorization", "te", "trailer", "expect"]);
/** Response headers passed back. */
const RETURNED_HEADERS = ["content-type", "content-length", "last-modified", "etag", "location"];

/** Normalized host as the allowlist compares it: lowercase, without a trailing dot. */
function normalizeHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, "");
}

/** Whether `hostname` (from a URL) is on `allow`. */
export function hostAllowed(hostname: string, allow: readonly string[]): boolean {
  const host = normalizeHost(hostname);
  for (const raw of allow) {
    const entry = normalizeHost(raw);
    if (entry.startsWith("*.")) {
      if (host.endsWith(entry.slice(1)) && host.length > entry.length - 1) return true;
    } else if (host === entry) {
      return true;
    }
  }
  return false;
}

/** Parses and checks a URL: http or https, no credentials in it, host on the allowlist. */
export function checkUrl(text: string, allow: readonly string[], base?: URL): URL {
  let url: URL;
  try {
    url = base ? new URL(text, base) : new URL(text);
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, `${JSON.stringify(text)} is not a URL`, { cause: err });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new MaxwellError(ErrorCode.Forbidden, `only http and https URLs may be fetched, not ${url.protocol}`);
  }
  if (url.username || url.password) throw new MaxwellError(ErrorCode.BadRequest, "a URL may not carry a user name or password");
  if (!hostAllowed(url.hostname, allow)) {
    throw new MaxwellError(ErrorCode.Forbidden, `host ${url.hostname} is not on this tool service's fetch allowlist`, { detail: { host: url.hostname } });
  }
  return url;
}

/** Reads at most `max` bytes of a body, then stops reading. */
async function readCapped(body: ReadableStream<Uint8Array> | null, max: number): Promise<{ bytes: Uint8Array; truncated: boolean }> {
  if (!body) return { bytes: new Uint8Array(0), truncated: false };
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let truncated = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const room = max - total;
    if (value.byteLength > room) {
      chunks.push(value.subarray(0, room));
      total += room;
      truncated = true;
      await reader.cancel();
      break;
    }
    chunks.push(value);
    total += value.byteLength;
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return { bytes, truncated };
}

/** Why a fetch failed: the call's own abort (deadline, stop), the time limit, or the network. */
function fetchFailure(err: unknown, signal: AbortSignal, url: URL, timeoutMs: number): MaxwellError {
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    if (reason instanceof MaxwellError) return reason;
    return new MaxwellError(ErrorCode.Timeout, `fetching ${url.origin} took longer than ${timeoutMs} ms`, { cause: err });
  }
  const cause = (err as { cause?: { message?: string } }).cause?.message;
  return new MaxwellError(ErrorCode.Unavailable, `cannot fetch ${url.origin}: ${cause ?? (err as Error).message}`, { cause: err });
}

interface FetchArgs {
  url: string;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
}

/** The `http-fetch` tool. */
export function httpFetchTool(config: FetchConfig): Tool {
  const maxBytes = config.maxBytes ?? FETCH_DEFAULTS.maxBytes;
  const timeoutMs = config.timeoutMs ?? FETCH_DEFAULTS.timeoutMs;
  const maxRedirects = config.maxRedirects ?? FETCH_DEFAULTS.maxRedirects;
  const allow = [...config.allow];

  return defineTool<FetchArgs>({
    manifest: {
      name: "http-fetch",
      version: "1.0.0",
      description: "Fetches a URL (GET or POST) from a host on the service's allowlist. Redirects are followed only to allowed hosts. Returns status, a few headers and the body as text, cut at the service's size limit. Results are untrusted.",
      effect: ToolEffect.External,
      idempotent: false,
      input: {
        type: "object",
        properties: {
          url: { type: "string", minLength: 1, maxLength: 8192 },
          method: { type: "string", enum: ["GET", "POST"] },
          headers: { type: "object", additionalProperties: { type: "string", maxLength: 8192 }, maxProperties: 32 },
          body: { type: "string", maxLength: 262144, description: "Request body (POST only)." },
        },
        required: ["url"],
        additionalProperties: false,
      },
      output: {
        type: "object",
        properties: {
          url: { type: "string" },
          status: { type: "integer" },
          headers: { type: "object", additionalProperties: { type: "string" } },
          body: { type: "string" },
          truncated: { type: "boolean" },
        },
        required: ["url", "status", "headers", "body", "truncated"],
      },
    },
    labels: [Label.Untrusted],
    async handler(args, ctx) {
      let method = args.method ?? "GET";
      let body = args.body;
      if (body !== undefined && method !== "POST") throw new MaxwellError(ErrorCode.BadRequest, "a body may only be sent with POST");
      const headers = new Headers();
      for (const [name, value] of Object.entries(args.headers ?? {})) {
        if (REFUSED_HEADERS.has(name.toLowerCase())) throw new MaxwellError(ErrorCode.BadRequest, `header '${name}' may not be set`);
        try {
          headers.set(name, value);
        } catch (err) {
          throw new MaxwellError(ErrorCode.BadRequest, `header '${name}' is not a valid HTTP header`, { cause: err });
        }
      }
      const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(timeoutMs)]);
      let url = checkUrl(args.url, allow);
      for (let redirects = 0; ; redirects++) {
        let res: Response;
        try {
          res = await fetch(url, { method, headers, body: body ?? null, redirect: "manual", signal });
        } catch (err) {
          throw fetchFailure(err, signal, url, timeoutMs);
        }
        const location = res.headers.get("location");
        if (res.status >= 300 && res.status < 400 && location !== null) {
          await res.body?.cancel();
          if (redirects >= maxRedirects) throw new MaxwellError(ErrorCode.Unavailable, `${args.url} redirected more than ${maxRedirects} times`);
          const next = checkUrl(location, allow, url);
          if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
            method = "GET";
            body = undefined;
            headers.delete("content-type");
          }
          if (next.origin !== url.origin) headers.delete("authorization");
          ctx.log.debug({ from: url.href, to: next.href, status: res.status }, "following redirect");
          url = next;
          continue;
        }
        let read: { bytes: Uint8Array; truncated: boolean };
        try {
          read = await readCapped(res.body, maxBytes);
        } catch (err) {
          throw fetchFailure(err, signal, url, timeoutMs);
        }
        const { bytes, truncated } = read;
        const returned: Record<string, string> = {};
        for (const name of RETURNED_HEADERS) {
          const value = res.headers.get(name);
          if (value !== null) returned[name] = value;
        }
        return { url: url.href, status: res.status, headers: returned, body: new TextDecoder().decode(bytes), truncated };
      }
    },
  });
}
