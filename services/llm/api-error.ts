/**
 * How a failed Messages API call becomes a {@link WireError}: the API's status and error type
 * mapped onto Maxwell's closed set of codes, with a message a person can act on and no secret in
 * it. Pure.
 */
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from "@anthropic-ai/sdk";
import { ErrorCode, type WireError } from "../../src/protocol/errors.js";

/** Why the gateway itself abandoned a call, when it did. */
export type AbandonReason = "deadline" | "stopping";

/** Anything shaped like an Anthropic key, whether or not it is the gateway's. */
const KEY_SHAPE = /sk-ant-[A-Za-z0-9_-]{8,}/g;

/** Removes `secrets` and anything shaped like an API key from `text`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 8) out = out.split(s).join("[redacted]");
  return out.replace(KEY_SHAPE, "[redacted]");
}

function codeOfStatus(status: number): ErrorCode {
  if (status === 400 || status === 413 || status === 422) return ErrorCode.BadRequest;
  if (status === 401 || status === 403) return ErrorCode.Unauthorized;
  if (status === 404) return ErrorCode.NotFound;
  if (status === 408 || status === 504) return ErrorCode.Timeout;
  // 402 (billing), 409, 429 and 5xx (529 overloaded included): the API cannot serve the call now.
  return ErrorCode.Unavailable;
}

function codeOfType(type: string | null): ErrorCode {
  switch (type) {
    case "invalid_request_error":
      return ErrorCode.BadRequest;
    case "authentication_error":
    case "permission_error":
      return ErrorCode.Unauthorized;
    case "not_found_error":
      return ErrorCode.NotFound;
    case "timeout_error":
      return ErrorCode.Timeout;
    default:
      return ErrorCode.Unavailable;
  }
}

/**
 * Whether a failure may succeed if the same call is sent again: an error the API reported in
 * the middle of a stream (which the SDK does not retry) for overload or its own fault.
 */
export function isRetryableMidStream(err: unknown): boolean {
  return err instanceof APIError && err.status === undefined && !(err instanceof APIConnectionError) && (err.type === "overloaded_error" || err.type === "api_error");
}

/** The wire form of a failed call. `secrets` (the API key) never appear in it. */
export function apiErrorToWire(err: unknown, opts: { abandoned?: AbandonReason; timeoutMs?: number; secrets: readonly string[] }): WireError {
  const clean = (s: string): string => redact(s, opts.secrets);
  if (opts.abandoned === "deadline") {
    return { code: ErrorCode.Timeout, message: `the model did not answer within ${opts.timeoutMs ?? "?"} ms (the call's deadline)` };
  }
  if (opts.abandoned === "stopping" || err instanceof APIUserAbortError) {
    return { code: ErrorCode.Unavailable, message: "the model gateway is stopping; the call was abandoned" };
  }
  if (err instanceof APIConnectionTimeoutError) {
    return { code: ErrorCode.Timeout, message: "the model API did not answer in time, retries included" };
  }
  if (err instanceof APIConnectionError) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return { code: ErrorCode.Unavailable, message: clean(`cannot reach the model API${cause}; retries exhausted`) };
  }
  if (err instanceof APIError) {
    const detail: Record<string, unknown> = {};
    if (err.status !== undefined) detail["status"] = err.status;
    if (err.type) detail["type"] = err.type;
    if (err.requestID) detail["requestId"] = err.requestID;
    const said = err.apiMessage ?? err.message;
    if (err.status === undefined) {
      return { code: codeOfType(err.type), message: clean(`the model API failed mid-stream (${err.type ?? "error"}): ${said}`), detail };
    }
    const code = codeOfStatus(err.status);
    let message = `the model API answered ${err.status} ${err.type ?? ""}: ${said}`;
    if (code === ErrorCode.Unauthorized) message += " (check the gateway's ANTHROPIC_API_KEY)";
    else if (code === ErrorCode.Unavailable) message += "; retries exhausted";
    return { code, message: clean(message), detail };
  }
  const text = err instanceof Error ? err.message : String(err);
  return { code: ErrorCode.Internal, message: clean(`model call failed: ${text}`) };
}
