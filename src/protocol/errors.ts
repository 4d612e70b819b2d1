/**
 * The one error type that crosses Maxwell's wire: a closed set of codes, a message a person can
 * act on, and the cause kept. The kernel replies with {@link WireError}; the SDK and CLI turn it
 * back into a {@link MaxwellError} so both sides of the wire see the same type.
 */

/** Every code a Maxwell error can carry. Closed: a new code is a protocol change. */
export const ErrorCode = {
  BadRequest: "bad_request",
  Unauthorized: "unauthorized",
  Forbidden: "forbidden",
  Held: "held",
  BudgetExceeded: "budget_exceeded",
  NotFound: "not_found",
  Conflict: "conflict",
  Timeout: "timeout",
  Unavailable: "unavailable",
  Internal: "internal",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const codes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** Whether `value` is one of the closed set of error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && codes.has(value);
}

/** The serialized form of an error, as it travels in a kernel reply or a log event. */
export interface WireError {
  code: ErrorCode;
  message: string;
  /** Ids of the policies that determined a denial, when a policy decided. */
  policies?: string[];
  /** Free-form detail for machines (e.g. schema paths). Never holds secrets. */
  detail?: Record<string, unknown>;
}

/** A Maxwell error: a code from {@link ErrorCode}, an actionable message, and its cause. */
export class MaxwellError extends Error {
  readonly code: ErrorCode;
  readonly policies: string[] | undefined;
  readonly detail: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; policies?: string[]; detail?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "MaxwellError";
    this.code = code;
    this.policies = options?.policies;
    this.detail = options?.detail;
  }

  /** The wire form of this error. */
  toWire(): WireError {
    const wire: WireError = { code: this.code, message: this.message };
    if (this.policies !== undefined) wire.policies = this.policies;
    if (this.detail !== undefined) wire.detail = this.detail;
    return wire;
  }

  /** Rebuilds an error received over the wire; anything unrecognizable becomes `internal`. */
  static fromWire(wire: unknown): MaxwellError {
    if (typeof wire === "object" && wire !== null) {
      const w = wire as Record<string, unknown>;
      const code = isErrorCode(w["code"]) ? w["code"] : ErrorCode.Internal;
      const message = typeof w["message"] === "string" ? w["message"] : "malformed error from the kernel";
      const policies = Array.isArray(w["policies"]) ? w["policies"].map(String) : undefined;
      const detail =
        typeof w["detail"] === "object" && w["detail"] !== null
          ? (w["detail"] as Record<string, unknown>)
          : undefined;
      return new MaxwellError(code, message, { policies, detail });
    }
    return new MaxwellError(ErrorCode.Internal, "malformed error from the kernel");
  }

  /** Wraps anything thrown into a MaxwellError, keeping it as the cause. */
  static from(err: unknown, fallback: ErrorCode = ErrorCode.Internal): MaxwellError {
    if (err instanceof MaxwellError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new MaxwellError(fallback, message, { cause: err });
  }
}
