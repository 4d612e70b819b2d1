/**
 * The SDK's side of the syscall wire: encode, send to the kernel, decode the typed answer, and
 * retry with the same syscall id while the kernel is unreachable. Because the id is the same, a
 * retry the kernel already recorded is answered from the log rather than acted on twice.
 */
import {
  ErrorCode,
  Header,
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
import { natsHeaders, replyRouter, type MsgHdrs, type NatsConnection, type ReplyRouter } from "../transport/connection.js";

export interface SyscallClientOptions {
  /** Per attempt. */
  attemptTimeoutMs?: number;
  /** How long to keep retrying while the kernel is unavailable. */
  retryForMs?: number;
  /** Called once when a syscall is held for a human (the call keeps waiting for the decision). */
  onHeld?: (approval: string, message: string) => void;
  /** How often to ask again while held (default 1 s, backing off to 5 s). */
  heldPollMs?: number;
}

export class SyscallClient {
  private readonly attemptTimeoutMs: number;
  private readonly retryForMs: number;
  /** Answers come back under the actor's own inbox, where the kernel insists on sending them. */
  private router: ReplyRouter | undefined;

  constructor(
    private readonly nc: NatsConnection,
    readonly actor: string,
    opts: SyscallClientOptions = {},
  ) {
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 5_000;
    this.retryForMs = opts.retryForMs ?? 60_000;
    this.onHeld = opts.onHeld;
    this.heldPollMs = opts.heldPollMs ?? 1_000;
  }

  private readonly onHeld: SyscallClientOptions["onHeld"];
  private readonly heldPollMs: number;
  private waiting = 0;

  /** Calls now waiting for a human's decision on a held action. */
  get waitingForHumans(): number {
    return this.waiting;
  }

  private abandoned = false;

  /**
   * The agent is stopping without the calls that wait for a human: they never return (as if the
   * process had ended there), so no handler acts on a stop it would take for an answer.
   */
  abandonHeldCalls(): void {
    this.abandoned = true;
  }

  /** Issues a syscall; resolves with its result or throws the kernel's typed error. */
  async call(op: SyscallOp, request: SyscallRequest, trace?: string): Promise<SyscallResult> {
    const subject = subjects.syscall(this.actor, op);
    const data = encode(request);
    this.router ??= replyRouter(this.nc, subjects.inboxPrefix(this.actor), this.attemptTimeoutMs);
    let headers: MsgHdrs | undefined;
    if (trace) {
      headers = natsHeaders();
      headers.set(Header.TraceParent, formatTraceparent(trace, newSpanId()));
    }
    const giveUpAt = Date.now() + this.retryForMs;
    let delay = 50;
    let heldPoll = 0;
    try {
      for (;;) {
        let raw: Uint8Array;
        try {
          raw = await this.router.requestData(subject, data, headers);
        } catch (err) {
          if (this.abandoned && heldPoll > 0) return await never();
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
        if (reply.error.code === ErrorCode.Held && !this.nc.isClosed()) {
          // Held for a human: ask again with the same id until someone decides (or it expires,
          // which the kernel answers as a denial). The answer then comes from the log.
          const detail = reply.error.detail as { approval?: string; expiresAt?: number } | undefined;
          if (heldPoll === 0) {
            this.onHeld?.(String(detail?.approval ?? "?"), reply.error.message);
            this.waiting += 1;
          }
          heldPoll = Math.min(heldPoll === 0 ? this.heldPollMs : heldPoll * 2, 5_000);
          await new Promise((r) => setTimeout(r, heldPoll));
          if (this.abandoned) return await never();
          continue;
        }
        throw MaxwellError.fromWire(reply.error);
      }
    } finally {
      if (heldPoll > 0) this.waiting -= 1;
    }
  }
}

/** A promise that never settles: what an abandoned call waits on. */
function never(): Promise<never> {
  return new Promise<never>(() => undefined);
}
