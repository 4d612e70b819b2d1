/**
 * Validation at the kernel edge: the JSON Schemas in schemas/, compiled once. A payload that
 * does not validate is refused with a `bad_request` naming the first offending field.
 */
import { Ajv, type ValidateFunction } from "ajv";
import ackSchema from "../../schemas/ack.json" with { type: "json" };
import logEventSchema from "../../schemas/log-event.json" with { type: "json" };
import syscallReplySchema from "../../schemas/syscall-reply.json" with { type: "json" };
import syscallRequestSchema from "../../schemas/syscall-request.json" with { type: "json" };
import { ErrorCode, MaxwellError } from "./errors.js";
import type { AckRequest, LogEvent, SyscallRequest } from "./events.js";

const ajv = new Ajv({ allErrors: false, strict: false });
ajv.addSchema(logEventSchema);
ajv.addSchema(syscallReplySchema);
const validateRequest: ValidateFunction = ajv.compile(syscallRequestSchema);
const validateEvent: ValidateFunction = ajv.getSchema(logEventSchema.$id) as ValidateFunction;
const validateAck: ValidateFunction = ajv.compile(ackSchema);

function explain(validate: ValidateFunction, what: string): MaxwellError {
  const first = validate.errors?.[0];
  const where = first?.instancePath ? first.instancePath.slice(1).replace(/\//g, ".") : "";
  let why = first?.message ?? "is invalid";
  if (first?.keyword === "additionalProperties") {
    const extra = String((first.params as { additionalProperty?: unknown }).additionalProperty);
    why = `has a field it may not carry: '${extra}'`;
    if (extra === "actor" || extra === "principal") {
      why += ` (the kernel takes the ${extra} from the authenticated connection, never from a payload)`;
    }
  }
  return new MaxwellError(ErrorCode.BadRequest, `${what}${where ? ` field '${where}'` : ""} ${why}`, {
    detail: { schema: validate.schema && (validate.schema as { $id?: string }).$id, errors: validate.errors ?? [] },
  });
}

/** Validates a decoded syscall payload; throws `bad_request` when it does not match the schema. */
export function parseSyscallRequest(value: unknown): SyscallRequest {
  if (!validateRequest(value)) throw explain(validateRequest, "syscall");
  return value as SyscallRequest;
}

/** Validates a decoded log event (used by tests and by tools reading foreign bundles). */
export function parseLogEvent(value: unknown): LogEvent {
  if (!validateEvent(value)) throw explain(validateEvent, "log event");
  return value as LogEvent;
}

/** Largest list an ack may carry (schemas/ack.json `maxItems`). */
const MAX_ACK_ITEMS = 4096;

function isSeqList(value: unknown): boolean {
  if (!Array.isArray(value) || value.length > MAX_ACK_ITEMS) return false;
  for (const seq of value) if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 1) return false;
  return true;
}

/**
 * The whole of schemas/ack.json checked by hand: acks are the most frequent message the kernel
 * takes, and this is several times cheaper than the generic validator. Anything it does not
 * accept goes through ajv, which decides and names the offending field.
 */
function isWellFormedAck(value: unknown): boolean {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  for (const key in value) {
    const field = (value as Record<string, unknown>)[key];
    if (key === "ack" || key === "working" || key === "nak") {
      if (!isSeqList(field)) return false;
    } else if (key !== "resend" || typeof field !== "boolean") return false;
  }
  return true;
}

/** Validates a decoded ack; throws `bad_request` when it does not match schemas/ack.json. */
export function parseAck(value: unknown): AckRequest {
  if (!isWellFormedAck(value) && !validateAck(value)) throw explain(validateAck, "ack");
  return value as AckRequest;
}
