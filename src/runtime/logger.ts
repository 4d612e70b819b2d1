/**
 * Structured logs for every Maxwell process: JSON lines on stderr (pino), one `service` field
 * naming the process. MAXWELL_LOG_LEVEL sets the level (default info).
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(service: string, level = process.env["MAXWELL_LOG_LEVEL"] ?? "info"): Logger {
  return pino({ name: service, level, base: { service, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}
