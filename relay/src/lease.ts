import { postgresJsOptions, sessionParameters } from "@saga/db";
import { withTimeout } from "@saga/runtime";
import postgres from "postgres";
import { cancelQuery } from "./outbox-store.ts";

/** The advisory lock that makes one relay instance the owner of an outbox; the same in every database. */
export const RELAY_LOCK: readonly [number, number] = [7_340_002, 1];

// The lock session's statements are sent whole, as simple-protocol messages with their constants written
// in (`unsafe` without parameters). A statement with parameters goes out in two rounds the first time it
// runs (Parse and Describe, then Bind and Execute once the types are known), and a process frozen between
// them leaves its session active, waiting for its client: never idle, so `idle_session_timeout` never ends
// it, and an owner frozen there kept the lock for good (a CI run, its first heartbeat).
const LOCK_ARGS = `${RELAY_LOCK[0]}, ${RELAY_LOCK[1]}`;

export type LeaseOptions = {
  url: string;
  /** application_name of the lock's session, so `pg_locks` joined with `pg_stat_activity` names the owner. */
  holderName: string;
  /** How often the owner checks that its session still holds the lock. */
  heartbeatMs?: number;
  /** A check (or the first try) that takes longer than this counts as a lost connection. */
  timeoutMs?: number;
  /**
   * The server ends a lock session idle for longer than this, which releases the lock of an owner
   * that is frozen or cut off from the database (the heartbeat keeps a healthy one busy).
   * https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-SESSION-TIMEOUT
   */
  serverIdleTimeoutMs?: number;
};

export type Lease = {
  /**
   * Becomes the owner: asks the server for the lock and waits there up to `waitMs`, so
   * that the lock is granted the moment its owner's session ends, with nothing polled meanwhile.
   * Resolves with a signal that aborts when ownership is lost (the session ended, a heartbeat failed
   * or found the lock gone), or undefined when another instance still owns the outbox, the database
   * cannot be reached, or `stop` aborted (which ends the wait on the server). A wait that failed (not one
   * that ran out its time, nor one `stop` ended) is told to `onFailure`.
   */
  acquire(
    waitMs: number,
    stop?: AbortSignal,
    onFailure?: (err: unknown) => void,
  ): Promise<AbortSignal | undefined>;
  /**
   * Resolves once the lock is known held as of a check asked at most two heartbeats ago: at once on a
   * healthy owner, otherwise after asking its session (a process that was frozen or stalled has only an
   * old answer, and the server may have ended its session since). When the lock is gone it loses the
   * lease first, so the signal `acquire` gave has aborted by the time this resolves.
   */
  confirm(): Promise<void>;
  /** Gives ownership up (the session ends, and with it the lock). */
  release(): Promise<void>;
};

type Ownership = {
  controller: AbortController;
  heartbeat: NodeJS.Timeout;
  /** Asks the session whether it still holds the lock, one check at a time; loses the lease if not. */
  check: () => Promise<void>;
};

/**
 * Ownership of one outbox through a session-level advisory lock on a connection of its own.
 * postgres.js reconnects transparently, and a new session would not hold the lock: so the lease is
 * lost as soon as its connection closes, and the heartbeat asks `pg_locks` rather than trusting
 * the connection.
 */
export function createLease({
  url,
  holderName,
  heartbeatMs = 1000,
  timeoutMs = 3000,
  serverIdleTimeoutMs = 10_000,
}: LeaseOptions): Lease {
  const server = postgresJsOptions(url);
  let session: postgres.Sql | undefined;
  let owned: Ownership | undefined;
  // When the lock was last known held: when the statement that found it held was *sent* (the take or a
  // heartbeat), not when its answer was read. An answer read late, after a freeze, says nothing of the
  // time since: the server may have ended the session meanwhile (idle_session_timeout).
  let heldAsOf = Number.NEGATIVE_INFINITY;

  /** Gives the lease up; resolves once its session has ended (the caller may not wait). */
  const lose = (reason: string): Promise<void> => {
    if (!owned) return Promise.resolve();
    const { controller, heartbeat } = owned;
    owned = undefined;
    clearInterval(heartbeat);
    controller.abort(new Error(`lease lost: ${reason}`));
    return closeSession();
  };

  async function closeSession(): Promise<void> {
    const s = session;
    session = undefined;
    await s?.end({ timeout: 1 }).catch(() => {});
  }

  function open(): postgres.Sql {
    const s = postgres({
      ...server,
      max: 1,
      // The lock lives as long as the session: never let the pool recycle it.
      max_lifetime: null,
      idle_timeout: 0,
      connect_timeout: Math.ceil(timeoutMs / 1000),
      fetch_types: false,
      onnotice: () => {},
      connection: sessionParameters({
        application_name: holderName,
        idle_session_timeout: serverIdleTimeoutMs,
        // Its statements are instant; one that is not ends with the server's cancel, like the client's wait.
        // The lock wait sets a longer one for itself.
        statement_timeout: timeoutMs,
        // A standby's wait for the lock outlives its client only by a second: a backend still waiting for
        // a client that is gone would be granted the lock first, and hold it until it noticed.
        client_connection_check_interval: 1000,
      }),
      onclose: () => {
        if (s === session) lose("its connection closed");
      },
    });
    return s;
  }

  /**
   * A lock-session statement bounded by `timeoutMs`. Past it the session counts as lost and is closed
   * (a half-open connection answers nothing, not even a cancel), which also ends the statement.
   */
  function bounded<T>(s: postgres.Sql, what: string, query: () => Promise<T>, ms = timeoutMs): Promise<T> {
    return withTimeout(
      async (signal) => {
        signal.addEventListener("abort", () => void s.end({ timeout: 0 }).catch(() => {}), { once: true });
        return query();
      },
      ms,
      `lease ${what}`,
    );
  }

  /**
   * Waits on the server for the lock, `waitMs` at most: one simple-protocol message of two statements,
   * which run as one implicit transaction, so the `SET LOCAL` of a longer `statement_timeout` ends with
   * it (a session-level advisory lock does not). Not postgres.js's `begin`: when the connection drops
   * while a statement waits, its rollback is written to the closed connection, which throws in a
   * `setImmediate` and ends the process (3.4.10; seen in a chaos run's PostgreSQL kill). Both the timeout
   * and a cancel on `stop` end the wait with `query_canceled`: not acquired.
   */
  async function waitForLock(s: postgres.Sql, waitMs: number, stop?: AbortSignal): Promise<void> {
    const wait = s.unsafe(
      // At least 1 ms: a statement_timeout of 0 would wait for ever.
      `set local statement_timeout = ${Math.max(1, Math.ceil(waitMs))}; select pg_advisory_lock(${LOCK_ARGS})`,
    );
    // Cancelled even before it is sent: a lock wait must not take the lock later for nobody (a stop ends
    // the lease's connection anyway).
    const cancel = () => cancelQuery(wait, { unsent: "cancel" });
    stop?.addEventListener("abort", cancel, { once: true });
    try {
      await bounded(s, "lock wait", () => wait, waitMs + timeoutMs);
    } finally {
      stop?.removeEventListener("abort", cancel);
    }
  }

  async function stillHeld(s: postgres.Sql): Promise<boolean> {
    const [row] = await bounded(s, "heartbeat", () =>
      s.unsafe<{ held: boolean }[]>(`
          select exists(
            select 1 from pg_locks
            where locktype = 'advisory' and pid = pg_backend_pid() and granted
              and classid = ${RELAY_LOCK[0]} and objid = ${RELAY_LOCK[1]} and objsubid = 2) as held`),
    );
    return row?.held === true;
  }

  return {
    async acquire(waitMs, stop, onFailure) {
      if (owned) return owned.controller.signal;
      if (stop?.aborted) return undefined;
      session ??= open();
      const s = session;
      const asked = performance.now();
      try {
        await waitForLock(s, waitMs, stop);
      } catch (err) {
        // A wait that ran out its time was refused on the server and holds nothing: its session stays for
        // the next one. After any other failure, a cancel on `stop` among them (it may come once the lock
        // was granted), only a new session is sure to hold nothing.
        const timedOut = !stop?.aborted && (err as { code?: unknown }).code === "57014";
        if (!timedOut) await closeSession();
        if (!timedOut && !stop?.aborted) onFailure?.(err);
        return undefined;
      }
      if (s !== session) return undefined;
      // When the lock was asked for, not granted: earlier than the truth, which only makes `confirm` ask.
      heldAsOf = asked;
      const controller = new AbortController();
      // One check at a time, shared by the heartbeat and `confirm`; it never rejects.
      let checking: Promise<void> | undefined;
      const check = () => {
        if (checking) return checking;
        const sent = performance.now();
        checking = stillHeld(s)
          .then(
            (held) => {
              if (held) heldAsOf = Math.max(heldAsOf, sent);
              else lose("the lock is no longer held by its session");
            },
            (err: Error) => lose(`heartbeat failed: ${err.message}`),
          )
          .finally(() => {
            checking = undefined;
          });
        return checking;
      };
      const heartbeat = setInterval(() => void check(), heartbeatMs);
      owned = { controller, heartbeat, check };
      return controller.signal;
    },

    async confirm() {
      // Two heartbeats: a healthy owner's last check is at most one old, so it never waits here; and far
      // below the server's idle_session_timeout, so a session found holding the lock since cannot have
      // been ended for idleness (ended any other way, its connection closes and the lease is lost).
      const since = performance.now() - 2 * heartbeatMs;
      // A check in flight may have been sent before a freeze; then the next one, sent now, decides.
      while (owned && heldAsOf < since) await owned.check();
    },

    async release() {
      // The session's end, not just its start: until the server has ended it, it holds the lock.
      await lose("released");
      await closeSession();
    },
  };
}
