import type { FailureKind } from "@saga/kafka";

/** An event that can never be applied: it fails its contract, or no handler takes its topic. */
export class PoisonEventError extends Error {
  override readonly name = "PoisonEventError";
  readonly retriable = false;
}

// SQLSTATEs worth retrying, https://www.postgresql.org/docs/current/errcodes-appendix.html:
// the server went away, is restarting, too slow or short of a resource for now, cannot write, or the
// transaction lost a race it may win next time. Never a bug: an outage must not spend a consumer's retry
// budget (classifyFailure).
const RETRIABLE_SQLSTATE_CLASSES = [
  "08", // connection exception
  // Insufficient resources: 53100 disk_full, 53200 out_of_memory (also "out of shared memory" past
  // max_locks_per_transaction), 53300 too_many_connections, 53400 configuration_limit_exceeded
  // (temp_file_limit). The server's state, which an operator mends, never the event's.
  "53",
  "58", // system error: 58030 io_error, a file the server cannot read or write
];
const RETRIABLE_SQLSTATES = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  // read_only_sql_transaction: a write reached a server that takes none: a primary demoted by a failover,
  // whose connections outlived it, or one made read only for a switchover (default_transaction_read_only)
  // or by a provider at a full disk.
  "25006",
  "55P03", // lock_not_available (lock_timeout)
  "57014", // query_canceled (statement_timeout): a server too slow for now, not a bad event
  "25P03", // idle_in_transaction_session_timeout: the session was cut off mid-transaction
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
 * shutdown errors, a server short of a resource (a full disk, its memory) or failing to read or write its
 * files, a server that takes no writes (read only), network errors, and errors that say so themselves
 * (`retriable`, as kafkajs's do).
 * Walks `cause` chains and aggregate errors, since drizzle wraps the driver's error in its own.
 */
export function isRetriableError(error: unknown): boolean {
  for (const { code, retriable, message } of errorChain(error)) {
    if (retriable === false) return false;
    if (retriable === true) return true;
    if (typeof code === "string" && isRetriableCode(code)) return true;
    if (code === undefined && typeof message === "string" && RETRIABLE_MESSAGES.some((m) => m.test(message)))
      return true;
  }
  return false;
}

type ErrorFields = { code?: unknown; retriable?: unknown; message?: unknown };

/**
 * An error and what it wraps, outermost first, each once: its `cause` chain and the members of aggregate
 * errors, since drizzle wraps the driver's error in its own.
 */
function* errorChain(error: unknown): Generator<ErrorFields> {
  const seen = new Set<unknown>();
  const queue: unknown[] = [error];
  while (queue.length > 0) {
    const e = queue.shift();
    if (typeof e !== "object" || e === null || seen.has(e)) continue;
    seen.add(e);
    yield e as ErrorFields;
    const { cause, errors } = e as { cause?: unknown; errors?: unknown };
    queue.push(cause);
    if (Array.isArray(errors)) queue.push(...errors);
  }
}

const isSqlStateOf = (classes: string[], code: string) =>
  code.length === 5 && classes.includes(code.slice(0, 2));

const isRetriableCode = (code: string) =>
  RETRIABLE_SQLSTATES.has(code) ||
  RETRIABLE_CONNECTION_CODES.has(code) ||
  isSqlStateOf(RETRIABLE_SQLSTATE_CLASSES, code);

// Retriable failures that leave the database as it was, whatever was sent: the server refused the
// connection or the statement, or failed the statement, which aborts its transaction (a COMMIT
// included: a COMMIT that fails has committed nothing). 57014 is a statement_timeout or a cancel, 25P03
// ends a session idle inside its transaction, rolling it back. A failure to write the commit's own WAL
// record is no ERROR but a PANIC, which ends the connection (lost, not here).
const UNAPPLIED_SQLSTATE_CLASSES = ["53", "58"];
const UNAPPLIED_SQLSTATES = new Set([
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08004", // sqlserver_rejected_establishment_of_sqlconnection
  "25006",
  "25P03",
  "40001",
  "40P01",
  "55P03",
  "57014",
  "57P03",
]);
// No connection was made, so nothing was sent. (EHOSTUNREACH, ENETUNREACH and ETIMEDOUT are not here: a
// connection already open reports them too when its retransmissions give up.)
const UNAPPLIED_CONNECTION_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "CONNECT_TIMEOUT"]);
const UNAPPLIED_MESSAGES = [
  // pg-pool: no client came free, or none could connect, in connectionTimeoutMillis.
  /^timeout exceeded when trying to connect$/,
  /^Connection terminated due to connection timeout$/,
  // node-postgres's connect timeout.
  /^timeout expired$/,
];

/**
 * What a failure that `isRetriableError` accepts says of a write it ended: `undefined` when the write is
 * known to have changed nothing (no connection was had, or the server refused the statement or rolled it
 * back: a deadlock, a serialization failure, a statement timeout, a server read only, out of disk or
 * memory or failing its I/O), otherwise why its outcome is unknown,
 * since the statement, a COMMIT included, may have reached the server and committed there:
 * `"timed-out"` for node-postgres's client-side timeout (the server never answered), `"lost"` for a
 * connection that broke while the statement was out (`Connection terminated unexpectedly`, a reset, the
 * server shutting down). The outermost error that names its cause decides.
 *
 * node-postgres reports a failure to connect and a connection lost mid-statement alike (a reset, `Connection
 * terminated unexpectedly`), and drizzle answers a COMMIT lost so with the error of its ROLLBACK on the
 * dead client (`Client has encountered a connection error and is not queryable`): such failures are `"lost"`.
 */
export function unknownOutcome(error: unknown): "lost" | "timed-out" | undefined {
  for (const { code, message } of errorChain(error)) {
    if (typeof code === "string") {
      if (
        UNAPPLIED_SQLSTATES.has(code) ||
        isSqlStateOf(UNAPPLIED_SQLSTATE_CLASSES, code) ||
        UNAPPLIED_CONNECTION_CODES.has(code)
      )
        return undefined;
      if (isRetriableCode(code)) return "lost";
    }
    if (code === undefined && typeof message === "string") {
      if (UNAPPLIED_MESSAGES.some((m) => m.test(message))) return undefined;
      if (message === "Query read timeout") return "timed-out";
      if (RETRIABLE_MESSAGES.some((m) => m.test(message))) return "lost";
    }
  }
  return "lost";
}

/**
 * The consumers' failure contract (`FailureKind` of @saga/kafka): a `PoisonEventError` (decoding or
 * contract failure) is poison, a failure `isRetriableError` recognises is transient (the database or
 * the network, retried for as long as it takes), and every other error is unexpected: a bug or a data
 * problem, retried up to the budget and then dead-lettered.
 */
export function classifyFailure(error: unknown): FailureKind {
  if (causes(error).some((e) => e instanceof PoisonEventError)) return "poison";
  return isRetriableError(error) ? "transient" : "unexpected";
}

/** The error and its `cause` chain, at most a few deep. */
function causes(error: unknown): unknown[] {
  const chain = [error];
  for (let e = error; e instanceof Error && e.cause !== undefined && chain.length < 5; e = e.cause)
    chain.push(e.cause);
  return chain;
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
