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

// Fields that name what a line is about (an upstream instance, an outbox): lines that differ in one are
// different events.
const IDENTIFYING_FIELDS = ["upstream", "target", "outbox"] as const;

// The fields of a line that make it the same line as another (with its level, message and bindings): what
// its summary carries. A field that may differ between the lines counted (a request's id and path, an
// attempt, an offset) would say the first one happened as often.
const SUMMARY_FIELDS = [...IDENTIFYING_FIELDS, "err", "error"] as const;

type Repeat = { count: number; close: (flushed?: boolean) => void };

// Every window open in the process, closed by `flushRepeats`: one entry per distinct line, for as long as
// its window, so that nothing outlives the window (loggers made per test or per instance included).
const openWindows = new Set<Repeat>();

/**
 * Writes at once the summary of every repeated line still counted, by every logger of the process, and
 * closes their windows. A window's timer does not hold the process, so a process calls this before it
 * exits (`serveUntilSignal` does): otherwise the counts of its last window, the lines that came as it
 * failed, are never written.
 */
export function flushRepeats(): void {
  for (const repeat of [...openWindows]) repeat.close(true);
}

/**
 * The innermost cause of an error: what went wrong (a refused connection, a missing table), not the
 * query that a driver wrapped around it (drizzle's `DrizzleQueryError` carries the SQL and its params).
 */
export function rootCause(err: unknown): unknown {
  let cause = err;
  // Bounded: a chain of causes may loop.
  for (let depth = 0; depth < 16 && cause instanceof Error && cause.cause !== undefined; depth++)
    cause = cause.cause;
  return cause;
}

/** What kind of failure an `err` or `error` field is: its innermost cause's code, else its message. */
function failureKind(err: unknown): string {
  if (err === undefined) return "";
  const cause = rootCause(err);
  if (!(cause instanceof Error)) return String(cause);
  const { code } = cause as { code?: unknown };
  return typeof code === "string" && code !== "" ? code : cause.message;
}

/**
 * A pino `logMethod` hook that aggregates repeated warnings and errors: the first of a kind is written
 * at once; the same line again within `windowMs` is only counted, and when the window closes one line
 * says how often it came, with `repeated`. The same line: the same level, message, logger bindings
 * (a child's `outbox`, a dead letter's `claimKey`), `upstream`, `target` and `outbox`, and the same
 * kind of failure in `err` or `error`; other fields (a request's id and path, an attempt) may differ,
 * and the summary leaves them out: it carries only what made the lines the same, `err` and `error` (the
 * first line's). `flushRepeats` writes the summaries of the windows still open.
 * During a PostgreSQL restart this turns hundreds of `connect ECONNREFUSED` lines a second, one per
 * request or query, into one line every window.
 */
function aggregateRepeats(windowMs: number): pino.LoggerOptions["hooks"] {
  const seen = new Map<string, Repeat>();
  return {
    logMethod(args, method, level) {
      if (level < WARN) return method.apply(this, args);
      const [first, second] = args as unknown[];
      const fields = typeof first === "object" && first !== null ? (first as Record<string, unknown>) : {};
      const msg = typeof first === "string" ? first : typeof second === "string" ? second : "";
      // The bindings as pino serialized them when the child was made.
      const bindings = (this as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? "";
      const key = [
        level,
        msg,
        bindings,
        ...IDENTIFYING_FIELDS.map((f) => String(fields[f] ?? "")),
        failureKind(fields.err),
        failureKind(fields.error),
      ].join("\u0000");
      const repeat = seen.get(key);
      if (repeat) {
        repeat.count++;
        return;
      }
      if (seen.size >= MAX_TRACKED) return method.apply(this, args);
      method.apply(this, args);
      const summary: Record<string, unknown> = {};
      for (const field of SUMMARY_FIELDS) if (fields[field] !== undefined) summary[field] = fields[field];
      const opened = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const entry: Repeat = {
        count: 0,
        close: (flushed = false) => {
          clearTimeout(timer);
          openWindows.delete(entry);
          seen.delete(key);
          if (entry.count === 0) return;
          // Flushed before the window's end (the process exits): the time it was open, to a tenth of a second.
          const seconds = flushed ? Math.round((performance.now() - opened) / 100) / 10 : windowMs / 1000;
          method.apply(this, [
            { ...summary, repeated: entry.count, windowMs },
            `${msg} (${entry.count} more times in ${seconds} s)`,
          ] as Parameters<typeof method>);
        },
      };
      seen.set(key, entry);
      openWindows.add(entry);
      timer = setTimeout(entry.close, windowMs).unref();
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
  // Written synchronously: pino's default stdout writes in the background and, at exit, writes what is
  // queued at once, ahead of a write still in flight, so a process's last lines (the summaries of
  // `flushRepeats`, the reason it exits) came out of order, cut short, or not at all. The project writes
  // no line per request, so a write call per line costs nothing that counts.
  return pino(settings, destination ?? pino.destination({ dest: 1, sync: true }));
}
