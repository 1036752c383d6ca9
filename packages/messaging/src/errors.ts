/** An event that can never be applied: it fails its contract, or no handler takes its topic. */
export class PoisonEventError extends Error {
  override readonly name = "PoisonEventError";
  readonly retriable = false;
}

// SQLSTATEs worth retrying, https://www.postgresql.org/docs/current/errcodes-appendix.html:
// the server went away or is restarting, or the transaction lost a race it may win next time.
const RETRIABLE_SQLSTATE_CLASSES = ["08"]; // connection exception
const RETRIABLE_SQLSTATES = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "53300", // too_many_connections
  "57014", // query_canceled: statement_timeout, e.g. behind a lock held by a client that froze
  "25P03", // idle_in_transaction_session_timeout: the server ended a transaction that sat idle
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
]);

// postgres.js reports a lost or refused connection with these codes, Node's sockets with the errno ones.
const RETRIABLE_CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

// node-postgres reports a lost or unreachable server with plain errors that carry no code.
const RETRIABLE_MESSAGES = [
  /^Connection terminated/,
  /^Client has encountered a connection error and is not queryable$/,
  /^timeout exceeded when trying to connect$/,
  /^timeout expired$/,
  /^Query read timeout$/,
];

/**
 * Whether a failure may succeed when tried again: PostgreSQL connection, serialization, deadlock and
 * shutdown errors, network errors, and errors that say so themselves (`retriable`, as kafkajs's do).
 * Walks `cause` chains and aggregate errors, since drizzle wraps the driver's error in its own.
 */
export function isRetriableError(error: unknown): boolean {
  const seen = new Set<unknown>();
  const queue: unknown[] = [error];
  while (queue.length > 0) {
    const e = queue.shift();
    if (typeof e !== "object" || e === null || seen.has(e)) continue;
    seen.add(e);
    const { code, retriable, cause, errors, message } = e as {
      code?: unknown;
      retriable?: unknown;
      cause?: unknown;
      errors?: unknown;
      message?: unknown;
    };
    if (retriable === false) return false;
    if (retriable === true) return true;
    if (typeof code === "string") {
      if (RETRIABLE_SQLSTATES.has(code) || RETRIABLE_CONNECTION_CODES.has(code)) return true;
      if (code.length === 5 && RETRIABLE_SQLSTATE_CLASSES.includes(code.slice(0, 2))) return true;
    }
    if (
      code === undefined &&
      typeof message === "string" &&
      RETRIABLE_MESSAGES.some((m) => m.test(message))
    ) {
      return true;
    }
    queue.push(cause);
    if (Array.isArray(errors)) queue.push(...errors);
  }
  return false;
}

/** A one-line description of a failure for a log field or a dead-letter header, innermost cause included. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const parts = [`${error.name}: ${error.message}`];
  let cause: unknown = error.cause;
  for (let depth = 0; cause instanceof Error && depth < 3; depth++) {
    parts.push(`${cause.name}: ${cause.message}`);
    cause = cause.cause;
  }
  return parts.join(" <- ");
}
