/**
 * Maxwell's wire protocol: subjects, event and syscall shapes, the error type, msgpack encoding,
 * schema validation and the hash chain. Pure: no I/O and no NATS import, so any part of the tree
 * (and any test) can use it.
 *
 * @example
 * ```ts
 * import { subjects, encode, SyscallOp } from "maxwell/protocol";
 * nc.request(subjects.syscall("alice", SyscallOp.Send), encode({ id: "boot:1", to: "worker", body: "hi" }));
 * ```
 */
export { ErrorCode, MaxwellError, isErrorCode } from "./errors.js";
export type { WireError } from "./errors.js";
export {
  AdminOp,
  FORBIDDEN_HEADERS,
  Header,
  KERNEL_QUEUE,
  LOG_STREAM,
  PREFIX,
  SyscallOp,
  assertName,
  consumers,
  isName,
  isSyscallOp,
  parseSyscallSubject,
  subjects,
} from "./subjects.js";
export { isSyscallId, isTraceId, newEventId, newScope, syscallId } from "./ids.js";
export type { EventId, SyscallId, TraceId } from "./ids.js";
export { AgentState, EVENT_VERSION, EventType, IdentityKind, checkpointMessage } from "./events.js";
export type {
  AckRequest,
  AgentControlledEvent,
  ApprovalDecidedEvent,
  ApprovalRequestedEvent,
  BudgetLimits,
  BudgetScope,
  BudgetSetEvent,
  BlobEvent,
  EffectCompletedEvent,
  EffectKind,
  EffectStartedEvent,
  Reservation,
  ToolRegisteredEvent,
  CheckpointEvent,
  Decision,
  DeniedEvent,
  ForkEvent,
  GenesisEvent,
  IdentityRegisteredEvent,
  LogEvent,
  MessageEvent,
  Observation,
  PendingEvent,
  PolicyLoadedEvent,
  RecordEvent,
  RejectedEvent,
  ReplyEvent,
  Scope,
  SyscallReply,
  SyscallRequest,
  SyscallResult,
} from "./events.js";
export { decode, decodeMap, encode } from "./codec.js";
export { BLOB_MIN_BYTES, blobHash, blobValue, requestParts, resolveBlobs, resultParts, setAtPath, withBlobRefs } from "./blobs.js";
export type { BlobPart, BlobPath, BlobRef } from "./blobs.js";
export { parseAck, parseLogEvent, parseSyscallRequest } from "./schemas.js";
export { ChainVerifier, GENESIS_PREV, decodeEntry, entryHash } from "./chain.js";
export type { ChainProblem, SignatureCheck, StoredEntry, VerifyReport } from "./chain.js";
export { formatTraceparent, newSpanId, newTraceId, parseTraceparent } from "./trace.js";
export { Label, ServiceName, ServiceOp, ToolEffect, joinLabels, serviceSubjects } from "./services.js";
export type { Labels, ServiceCall, ServiceReply, ToolManifest, Usage } from "./services.js";
