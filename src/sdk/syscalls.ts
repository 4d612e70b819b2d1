/**
 * The SDK's side of the syscall wire: encode, send to the kernel, decode the typed answer, and
 * retry with the same syscall id while the kernel is unreachable. Because the id is the same, a
 * retry the kernel already recorded is answered from the log rather than acted on twice.
 */
import {
  ErrorCode,
  MaxwellError,
  decodeMap,
  encode,
  formatTraceparent,
  newSpanId,
  subjects,
  type SyscallOp,
  type SyscallReply,
  type SyscallRequest,
  type SyscallResult,
} from "../protocol/mod.js";
import { requestRaw, type NatsConnection } from "../transport/connection.js";

export interface SyscallClientOptions {
  /** Per attempt. */
  attemptTimeoutMs?: number;
  /** How long to keep retrying while the kernel is unavailable. */
  retryForMs?: number;
}

export class SyscallClient {
  private readonly attemptTimeoutMs: number;
  private readonly retryForMs: number;

  constructor(
    private readonly nc: NatsConnection,
    readonly actor: string,
    opts: SyscallClientOptions = {},
  ) {
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 5_000;
    this.retryForMs = opts.retryForMs ?? 60_000;
  }

  /** Issues a syscall; resolves with its result or throws the kernel's typed error. */
  async call(op: SyscallOp, request: SyscallRequest, trace?: string): Promise<SyscallResult> {
    const subject = subjects.syscall(this.actor, op);
    const data = encode(request);
    const traceparent = trace ? formatTraceparent(trace, newSpanId()) : undefined;
    const giveUpAt = Date.now() + this.retryForMs;
    let delay = 50;
    for (;;) {
      let raw: Uint8Array;
      try {
        raw = await requestRaw(this.nc, subject, data, { timeoutMs: this.attemptTimeoutMs, ...(traceparent ? { traceparent } : {}) });
      } catch (err) {
        const e = MaxwellError.from(err, ErrorCode.Unavailable);
        if ((e.code === ErrorCode.Unavailable || e.code === ErrorCode.Timeout) && Date.now() + delay < giveUpAt && !this.nc.isClosed()) {
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 1000);
          continue;
        }
        throw new MaxwellError(ErrorCode.Unavailable, `the kernel did not answer ${op} ${request.id} (${e.message})`, { cause: e });
      }
      const reply = decodeMap(raw) as unknown as SyscallReply;
      if (reply.ok) return reply.result;
      throw MaxwellError.fromWire(reply.error);
    }
  }
}
