/**
 * W3C trace context: the `traceparent` header that travels on every hop, and ids for it.
 */
import type { TraceId } from "./ids.js";
import { randomHex } from "./random.js";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function newTraceId(): TraceId {
  return randomHex(16) as TraceId;
}

export function newSpanId(): string {
  return randomHex(8);
}

/** Parses a traceparent header; undefined when absent or malformed (all-zero ids are invalid). */
export function parseTraceparent(value: string | undefined): { traceId: TraceId; spanId: string; flags: number } | undefined {
  if (!value) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m || /^0+$/.test(m[1] as string) || /^0+$/.test(m[2] as string)) return undefined;
  return { traceId: m[1] as TraceId, spanId: m[2] as string, flags: parseInt(m[3] as string, 16) };
}

export function formatTraceparent(traceId: string, spanId: string, sampled = true): string {
  return `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;
}
