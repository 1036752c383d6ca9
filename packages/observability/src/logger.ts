import { type DestinationStream, pino } from "pino";

export type Logger = pino.Logger;

export type LoggerOptions = {
  /** Identical warnings and errors within this window are written once, then once with their count. */
  repeatWindowMs?: number;
  /** Where the JSON lines go; stdout by default. */
  destination?: DestinationStream;
};

const WARN = 40;
// A bound on the distinct lines followed at once: past it a line is written as it comes.
const MAX_TRACKED = 1000;

type Repeat = { count: number; emit: (count: number) => void };

/**
 * A pino `logMethod` hook that aggregates repeated warnings and errors: the first of a kind is written
 * at once; the same line again (same level, message and error message, whatever else differs) within
 * `windowMs` is only counted, and when the window closes one line says how often it came, with
 * `repeated`. During a PostgreSQL restart this turns hundreds of `connect ECONNREFUSED` lines a second
 * into one line every window.
 */
export function aggregateRepeats(windowMs: number): pino.LoggerOptions["hooks"] {
  const seen = new Map<string, Repeat>();
  return {
    logMethod(args, method, level) {
      if (level < WARN) return method.apply(this, args);
      const [first, second] = args as unknown[];
      const fields = typeof first === "object" && first !== null ? (first as Record<string, unknown>) : {};
      const msg = typeof first === "string" ? first : typeof second === "string" ? second : "";
      const err = fields.err instanceof Error ? fields.err : undefined;
      const key = `${level}\u0000${msg}\u0000${err?.message ?? ""}`;
      const repeat = seen.get(key);
      if (repeat) {
        repeat.count++;
        return;
      }
      if (seen.size >= MAX_TRACKED) return method.apply(this, args);
      method.apply(this, args);
      const entry: Repeat = {
        count: 0,
        emit: (count) =>
          method.apply(this, [
            { ...fields, repeated: count, windowMs },
            `${msg} (${count} more times in ${windowMs / 1000} s)`,
          ] as Parameters<typeof method>),
      };
      seen.set(key, entry);
      setTimeout(() => {
        seen.delete(key);
        if (entry.count > 0) entry.emit(entry.count);
      }, windowMs).unref();
    },
  };
}

/**
 * A JSON logger on stdout; every line carries the process name. Repeated warnings and errors are
 * aggregated (`aggregateRepeats`), 10 s windows by default.
 */
export function createLogger(name: string, level: string = "info", options: LoggerOptions = {}): Logger {
  const { repeatWindowMs = 10_000, destination } = options;
  const settings: pino.LoggerOptions = {
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    hooks: aggregateRepeats(repeatWindowMs),
  };
  return destination ? pino(settings, destination) : pino(settings);
}
