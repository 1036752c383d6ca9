import type { Order, OrderStatus } from "@saga/contracts";
import {
  connectionLifetime,
  DEFAULT_POOL_MAX_LIFETIME_S,
  postgresJsOptions,
  type SessionTimeouts,
  sessionParameters,
} from "@saga/db";
import type { Logger } from "@saga/observability";
import postgres from "postgres";
import { SAGAS_FINISHED_CHANNEL } from "./domain/apply-credit-batch.ts";

/** The channel of db/migrations/order/0002_order_decided_notify.sql: `<order id>:<status>` lines. */
const CHANNEL = "order_decided";

export type OrderWaitsOptions = {
  databaseUrl: string;
  applicationName: string;
  /**
   * The service's session bounds, on the LISTEN connection too: LISTEN is a short statement and the
   * connection idles outside any transaction, so neither bound ever ends it (a held request is a timer
   * in this process, not a query).
   */
  timeouts: SessionTimeouts;
  /** Reads orders by id, for the waits a lost connection may have missed notifications for. */
  readOrders: (ids: string[]) => Promise<Order[]>;
  /** Waits held at once by this instance; past it a request is answered at once, as without the preference. */
  maxWaiters?: number;
  /**
   * Told, on the same connection, how many sagas each batch of answers finished, applied by any instance
   * (`SAGAS_FINISHED_CHANNEL`): the saga backlog's throughput. What is sent while the connection is down
   * is not heard again.
   */
  onSagasFinished?: (n: number) => void;
  /**
   * How long the LISTEN connection lives at most, in ms, before a new one replaces it (each its own
   * lifetime, down to 0.8 times this); by default the services' pool's, 5 minutes.
   */
  listenLifetimeMs?: number;
  logger: Logger;
};

/** Told the order's new status, or undefined when it is to be answered as it was read. */
type Waiter = (status: OrderStatus | undefined) => void;

// The longest wait between two attempts to restore the LISTEN connection.
const LISTEN_RETRY_MAX_S = 1;

/**
 * `GET /orders/:id` with `Prefer: wait=N`: holds the request until the order leaves PENDING or N seconds
 * pass. One LISTEN connection per instance hears every decision, made by any instance (a trigger on
 * `orders` notifies once per UPDATE statement, on commit), so a waiting request costs a timer and a map
 * entry, no query, until it is answered. The notification carries the new status; the rest of an order
 * never changes, so the answer needs no second read either. The same connection hears how many sagas
 * each batch of answers finished (`onSagasFinished`), for the saga backlog's bound.
 *
 * The connection is replaced once it has lived `listenLifetimeMs`, as the pool's are. postgres.js gives a
 * LISTEN connection no lifetime, and nothing else ends it while its server stays up: after a failover
 * that left the old primary up (read only, or cut off from the failover manager but not from us) it
 * would listen there for ever, hearing no decision, so every held read ran to its deadline, and no
 * finished saga, so the backlog's bound fell to its minimum and refused orders. A server that restarts
 * or goes away closes the connection itself (see `onListen`). The new connection listens before the old
 * one ends, so no decision goes unheard in between; the finished sagas are counted from one connection
 * at a time, so that none is counted twice (one sent while the new one starts listening may not be: the
 * bound errs low, as after a lost connection).
 */
export function createOrderWaits({
  databaseUrl,
  applicationName,
  timeouts,
  readOrders,
  maxWaiters = 10_000,
  onSagasFinished,
  listenLifetimeMs = DEFAULT_POOL_MAX_LIFETIME_S * 1000,
  logger,
}: OrderWaitsOptions) {
  const waiters = new Map<string, Set<Waiter>>();
  let count = 0;
  let stopped = false;
  const open = () =>
    postgres({
      ...postgresJsOptions(databaseUrl),
      max: 1,
      onnotice: () => {},
      // postgres.js waits 3^n / 100 s (up to 20 s) before its n-th reconnection after a failure, so after
      // an outage of 10 s or more the held reads heard no decision for up to 20 s more, while every other
      // route worked again: one connection, so retrying every second costs PostgreSQL nothing.
      backoff: (failures: number) => Math.min(3 ** failures / 100, LISTEN_RETRY_MAX_S),
      connection: sessionParameters({
        application_name: `${applicationName}/waits`,
        statement_timeout: timeouts.statementTimeoutMs,
        idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
      }),
    });
  let sql = open();
  // The connection whose finished sagas are counted: one at a time (see createOrderWaits).
  let counted = sql;
  // A new connection being opened to replace `sql`.
  let next: postgres.Sql | undefined;
  // When the next one will be.
  let renewal: NodeJS.Timeout | undefined;

  function decide(id: string, status: OrderStatus | undefined) {
    const set = waiters.get(id);
    if (set) for (const waiter of set) waiter(status);
  }

  function onNotify(payload: string) {
    for (const line of payload.split("\n")) {
      const colon = line.indexOf(":");
      decide(line.slice(0, colon), line.slice(colon + 1) as OrderStatus);
    }
  }

  // Called on every (re)connection: a decision committed while nothing listened was never heard, so
  // the orders being waited for are read once.
  async function onListen() {
    if (waiters.size === 0) return;
    try {
      for (const order of await readOrders([...waiters.keys()]))
        if (order.status !== "PENDING") decide(order.id, order.status);
    } catch (err) {
      logger.warn(
        { err },
        "could not re-read the orders being waited for; they are answered at their deadline",
      );
    }
  }

  async function listenOn(s: postgres.Sql): Promise<void> {
    await s.listen(CHANNEL, onNotify, () => void onListen());
    if (!onSagasFinished) return;
    // Counted from this connection alone from now on: a count it hears was sent after this moment, and
    // the connection it replaces is no longer counted, so no count is heard twice.
    counted = s;
    await s.listen(SAGAS_FINISHED_CHANNEL, (payload) => {
      // Anyone who can connect may NOTIFY: a payload that is not a count is not counted (a NaN would
      // make the bound refuse nothing for the rate's whole window).
      if (s === counted && /^\d{1,9}$/.test(payload)) onSagasFinished(Number(payload));
    });
  }

  function renewLater(): void {
    renewal = setTimeout(() => void renew(), connectionLifetime(listenLifetimeMs));
    renewal.unref();
  }

  /** A new connection listens, then the old one ends; if it cannot, the old one stays until next time. */
  async function renew(): Promise<void> {
    const old = sql;
    const s = open();
    next = s;
    try {
      await listenOn(s);
    } catch (err) {
      counted = old;
      await s.end({ timeout: 0 }).catch(() => {});
      if (stopped) return;
      logger.warn({ err }, "could not open a new LISTEN connection; the current one stays until next time");
      return renewLater();
    } finally {
      next = undefined;
    }
    if (stopped) {
      await s.end({ timeout: 0 }).catch(() => {});
      return;
    }
    sql = s;
    renewLater();
    await old.end({ timeout: 2 }).catch(() => {});
  }

  return {
    /** Starts listening; resolves once the LISTEN is in place. */
    async start(): Promise<void> {
      await listenOn(sql);
      renewLater();
    },

    /**
     * The order once it is no longer PENDING, or as `read` found it after `seconds` (or when `signal`
     * aborts); undefined when there is no such order. `applied` is false when the wait was not honoured
     * (too many waiters, shutting down, or `mayHold` said no) and the order was answered as read.
     * `mayHold` is asked only of a PENDING order about to be held, and may take what holding it costs
     * first (the request's place among the long polls), or throw to refuse it.
     */
    async awaitDecision(
      id: string,
      seconds: number,
      read: () => Promise<Order | undefined>,
      signal?: AbortSignal,
      mayHold: (order: Order) => boolean | Promise<boolean> = () => true,
    ): Promise<{ order: Order | undefined; applied: boolean }> {
      if (stopped || count >= maxWaiters) return { order: await read(), applied: false };
      // Registered before the read, so that a decision committed in between is not missed.
      let waiter!: Waiter;
      const decided = new Promise<OrderStatus | undefined>((resolve) => (waiter = resolve));
      let set = waiters.get(id);
      if (!set) waiters.set(id, (set = new Set()));
      set.add(waiter);
      count++;
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => waiter(undefined);
      try {
        const order = await read();
        if (!order || order.status !== "PENDING" || seconds <= 0 || stopped) return { order, applied: true };
        if (!(await mayHold(order))) return { order, applied: false };
        timer = setTimeout(onAbort, seconds * 1000);
        signal?.addEventListener("abort", onAbort, { once: true });
        const status = await decided;
        return { order: status ? { ...order, status } : order, applied: true };
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        set.delete(waiter);
        if (set.size === 0) waiters.delete(id);
        count--;
      }
    },

    /** Requests being held now. */
    waiting: () => count,

    /** Shutting down: answers every held request with the order as it was read, and holds no more. */
    release(): void {
      stopped = true;
      for (const set of waiters.values()) for (const waiter of set) waiter(undefined);
    },

    /** `release()`, and stops listening. */
    async stop(): Promise<void> {
      this.release();
      clearTimeout(renewal);
      await Promise.all([sql.end({ timeout: 2 }), next?.end({ timeout: 0 })]);
    },
  };
}

export type OrderWaits = ReturnType<typeof createOrderWaits>;
