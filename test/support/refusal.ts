import { expect } from "vitest";
import { MaxwellError } from "../../src/protocol/errors.js";

/** Runs `f`, expects it to throw a MaxwellError, and returns that error for further checks. */
export function refusal(f: () => unknown): MaxwellError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(MaxwellError);
    return err as MaxwellError;
  }
  throw new Error("expected a MaxwellError, but nothing was thrown");
}
