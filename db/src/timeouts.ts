/**
 * What the server lets one session of a service pool do, in ms (0 turns a bound off). Documented with the
 * services' environment (`DB_STATEMENT_TIMEOUT_MS`, `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`).
 */
export type SessionTimeouts = {
  /** The server cancels a statement that runs longer (`statement_timeout`), waits for locks included. */
  statementTimeoutMs: number;
  /**
   * The server ends a session that sits inside a transaction without a statement for longer
   * (`idle_in_transaction_session_timeout`), which rolls it back and releases its locks: a client that
   * froze or was cut off mid-transaction cannot hold its inbox rows and advisory locks for ever.
   */
  idleInTransactionTimeoutMs: number;
};

/** The defaults of `DB_STATEMENT_TIMEOUT_MS` and `DB_IDLE_IN_TRANSACTION_TIMEOUT_MS`. */
export const DEFAULT_SESSION_TIMEOUTS: SessionTimeouts = {
  statementTimeoutMs: 10_000,
  idleInTransactionTimeoutMs: 5_000,
};

/**
 * How much longer than `statement_timeout` the client itself waits for an answer. The server's own cancel
 * normally comes first; the client's fires only when the server cannot answer at all (a connection lost
 * without a FIN or RST, which neither side notices), and the connection is then destroyed.
 */
export const CLIENT_TIMEOUT_MARGIN_MS = 2000;

/** The client-side bound on one query that goes with `timeouts` (0 when statements are unbounded). */
export function clientQueryTimeoutMs(timeouts: SessionTimeouts): number {
  return timeouts.statementTimeoutMs > 0 ? timeouts.statementTimeoutMs + CLIENT_TIMEOUT_MARGIN_MS : 0;
}

/**
 * True for node-postgres's client-side query timeout, also wrapped (drizzle wraps the driver's error as
 * its `cause`): the query may still run and its connection is unusable until it answers, so the client
 * must be destroyed rather than given back to the pool.
 */
export function isClientQueryTimeout(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.message === "Query read timeout") return true;
  }
  return false;
}
