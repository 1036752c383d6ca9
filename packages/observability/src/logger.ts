import { pino } from "pino";

export type Logger = pino.Logger;

/** A JSON logger on stdout; every line carries the process name. */
export function createLogger(name: string, level: string = "info"): Logger {
  return pino({ name, level, base: { service: name }, timestamp: pino.stdTimeFunctions.isoTime });
}
