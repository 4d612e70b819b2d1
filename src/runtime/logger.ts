/**
 * Structured logs for every Maxwell process: JSON lines on stderr (pino), one `service` field
 * naming the process. MAXWELL_LOG_LEVEL sets the level (default info). A person at a terminal
 * gets the same records as readable lines (pino-pretty); pipes and files get JSON.
 */
import { pino, type Logger } from "pino";
import { PinoPretty } from "pino-pretty";

export type { Logger };

export function createLogger(service: string, level = process.env["MAXWELL_LOG_LEVEL"] ?? "info"): Logger {
  const options = { name: service, level, base: { service, pid: process.pid } };
  if (process.stderr.isTTY && process.env["MAXWELL_LOG_FORMAT"] !== "json") {
    return pino(options, PinoPretty({ destination: 2, sync: true, colorize: true, ignore: "pid,hostname,name,service", translateTime: "HH:MM:ss.l", singleLine: true }));
  }
  return pino(options, pino.destination({ dest: 2, sync: true }));
}
