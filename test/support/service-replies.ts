/** Unwrapping a service's reply in tests: the error it must be, or the result it must be. */
import type { ServiceReply, WireError } from "../../src/protocol/mod.js";

export function errorOf(reply: ServiceReply): WireError {
  if (reply.ok) throw new Error(`expected an error reply, got ${JSON.stringify(reply.result)}`);
  return reply.error;
}

export function resultOf<T>(reply: ServiceReply): T {
  if (!reply.ok) throw new Error(`expected a result, got ${reply.error.code}: ${reply.error.message}`);
  return reply.result as T;
}
