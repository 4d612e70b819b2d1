/**
 * Identifiers. Event ids are ULIDs (sortable, unique) assigned by the kernel. Syscall ids are
 * chosen by the caller and deterministic per (delivery, step), so a handler that is re-run after
 * a crash issues the same ids and the kernel answers repeats from the log instead of acting twice.
 */
import { monotonicFactory } from "ulid";
import { randomUint32 } from "./random.js";

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Id of a log event: a ULID. */
export type EventId = Brand<string, "EventId">;
/** Id of a syscall, unique per actor: `<scope>:<step>`. */
export type SyscallId = Brand<string, "SyscallId">;
/** W3C trace id (32 lowercase hex digits). */
export type TraceId = Brand<string, "TraceId">;

// ulid's default PRNG asks the OS once per character; draw from a pooled buffer instead.
const nextUlid = monotonicFactory(() => randomUint32() / 0x1_0000_0000);

/** A new event id. */
export function newEventId(): EventId {
  return nextUlid() as EventId;
}

/** A new random scope for syscalls made outside any delivery (e.g. at agent start). */
export function newScope(): string {
  return nextUlid();
}

const SYSCALL_ID = /^[A-Za-z0-9._-]{1,100}:[0-9]{1,9}$/;

/** The deterministic id of the `step`-th syscall made while handling `scope` (a delivery id). */
export function syscallId(scope: string, step: number): SyscallId {
  return `${scope}:${step}` as SyscallId;
}

export function isSyscallId(value: unknown): value is SyscallId {
  return typeof value === "string" && SYSCALL_ID.test(value);
}

const TRACE_ID = /^[0-9a-f]{32}$/;
export function isTraceId(value: unknown): value is TraceId {
  return typeof value === "string" && TRACE_ID.test(value) && value !== "0".repeat(32);
}
