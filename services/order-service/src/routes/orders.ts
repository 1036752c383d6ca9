import { CreateOrderRequest, IdParam, ORDER_PAGE_LIMIT, type Order, ROLE_HEADER } from "@saga/contracts";
import {
  type AppEnv,
  AppError,
  callerSubject,
  idempotencyKey,
  moveToLane,
  parseJsonBody,
  preferredWait,
  requestTraceparent,
  uuidParam,
} from "@saga/http";
import { type Database, requestFingerprint } from "@saga/messaging";
import { type Logger, markHeld, traceIdOf } from "@saga/observability";
import type { Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type pg from "pg";
import { markReplayed } from "../backpressure.ts";
import { cancelOrder, placeOrder, readOrder } from "../domain/order-hot-path.ts";
import { decodeCursor, listOrders } from "../domain/orders.ts";
import type { SagaMetrics } from "../metrics.ts";
import type { OrderWaits } from "../order-waits.ts";

export type OrderRoutesDeps = {
  db: Database;
  /** The same database's pool, for the hand-written statements of the hot path. */
  pool: pg.Pool;
  waits: OrderWaits;
  logger: Logger;
  saga: SagaMetrics;
};

/**
 * The user a request comes from (the gateway's verified subject), or undefined for an admin, and for a
 * caller without a role (development mode, in-process tests), who may act on any order.
 */
const callingUser = (c: Context) =>
  c.req.header(ROLE_HEADER) === "user" ? callerSubject(c).toLowerCase() : undefined;

/** Whether the caller may read this order: an admin any, a user its own (`callingUser`). */
const mayRead = (order: Order | undefined, user: string | undefined): order is Order =>
  order !== undefined && (user === undefined || order.userId === user);

/** A page's `limit`: digits, 1 to ORDER_PAGE_LIMIT.max, the default without one; anything else a 400. */
function pageLimit(given: string | undefined): number {
  if (given === undefined) return ORDER_PAGE_LIMIT.default;
  const limit = /^[0-9]{1,7}$/.test(given) ? Number(given) : 0;
  if (limit < 1 || limit > ORDER_PAGE_LIMIT.max)
    throw new AppError("BAD_REQUEST", `limit must be an integer from 1 to ${ORDER_PAGE_LIMIT.max}`);
  return limit;
}

/**
 * `POST /orders` (idempotent with `Idempotency-Key`) starts a saga, `GET /orders/:id`,
 * `GET /orders?userId=` (a page of them; the gateway composes its `GET /users/:id/orders` from it), and
 * `DELETE /orders/:id` cancels.
 */
export function registerOrderRoutes(app: Hono<AppEnv>, { db, pool, waits, logger, saga }: OrderRoutesDeps) {
  app.post("/orders", async (c) => {
    const body = await parseJsonBody(c, CreateOrderRequest);
    const key = idempotencyKey(c);
    const traceparent = requestTraceparent(c);
    const result = await placeOrder(
      pool,
      body,
      traceparent,
      key === undefined
        ? undefined
        : { subject: callerSubject(c), key, fingerprint: requestFingerprint("POST /orders", body) },
    );
    if (result.outcome === "mismatch") {
      throw new AppError("UNPROCESSABLE", "Idempotency-Key was already used for a different request");
    }
    // Debug: a line per request is a cost of the hot path (the saga's outcome is in the metrics). Its trace
    // id is the one its events carry, which the consumers' lines name.
    logger.debug({ requestId: c.get("requestId"), traceId: traceIdOf(traceparent), result }, "order created");
    if (result.outcome === "fresh") return c.json(result.order, 201);
    markReplayed(c);
    return c.json(result.body, result.status as ContentfulStatusCode);
  });

  app.get("/orders", async (c) => {
    const userId = c.req.query("userId");
    if (userId === undefined) throw new AppError("BAD_REQUEST", "query parameter userId is required");
    if (!IdParam.safeParse(userId).success) throw new AppError("BAD_REQUEST", "userId must be a UUID");
    const limit = pageLimit(c.req.query("limit"));
    const cursor = c.req.query("after");
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    if (cursor !== undefined && !after)
      throw new AppError(
        "BAD_REQUEST",
        "after must be a cursor as a page gave it (its next, or its Link's after)",
      );
    const user = userId.toLowerCase();
    const page = await listOrders(db.db, user, { limit, after });
    // The next page, relative to this request's URI (RFC 8288 §3.1): the gateway passes it on as it is
    // for its own `GET /orders`, and reads its `after` for `GET /users/:id/orders`.
    if (page.next) c.header("link", `</orders?userId=${user}&limit=${limit}&after=${page.next}>; rel="next"`);
    return c.json(page.orders);
  });

  // With `Prefer: wait=N` (RFC 7240), answers once the order is no longer PENDING, or after N seconds.
  // A user reads its own orders only: another's is not found, exactly as an unknown id (the gateway
  // forwards a user's read, a HEAD too, once, with the user's id and role, and reads no order first).
  app.get("/orders/:id", async (c) => {
    const id = uuidParam(c, "id");
    const wait = preferredWait(c.req.header("prefer"));
    const user = callingUser(c);
    c.header("vary", "prefer");
    if (wait === undefined) {
      const order = await readOrder(pool, id);
      if (!mayRead(order, user)) throw new AppError("NOT_FOUND", "order not found");
      return c.json(order);
    }
    // A user's wait is held on its own order only: held until the saga decided, another's would be told
    // from an unknown id by its timing.
    // The read is a read, in the read lane's bound like any other (an unknown or decided order is answered
    // at once); only a hold on a PENDING order moves to the long polls' lane, shed there when it is full.
    const { order, applied } = await waits.awaitDecision(
      id,
      wait,
      () => readOrder(pool, id),
      c.req.raw.signal,
      async (found) => {
        if (!mayRead(found, user)) return false;
        await moveToLane(c, "wait");
        return true;
      },
    );
    if (!mayRead(order, user)) throw new AppError("NOT_FOUND", "order not found");
    if (applied) {
      c.header("preference-applied", `wait=${wait}`);
      // It lasted as long as the saga (up to `wait` s): timed apart from the request latency.
      markHeld(c);
    }
    return c.json(order);
  });

  app.delete("/orders/:id", async (c) => {
    const id = uuidParam(c, "id");
    const traceparent = requestTraceparent(c);
    // A user cancels its own orders only: another's is not found, exactly as an unknown id, and nothing is
    // locked or written for it. Checked here, in the cancel's own statement, so that a cancel needs no read
    // first (the gateway's, in the read lane: clients polling their orders could refuse it).
    const transition = await cancelOrder(pool, id, traceparent, callingUser(c));
    if (!transition) throw new AppError("NOT_FOUND", "order not found");
    if (transition.kind === "changed") {
      saga.record(transition);
      logger.debug(
        { requestId: c.get("requestId"), traceId: traceIdOf(traceparent), orderId: id },
        "order canceled",
      );
    }
    return c.body(null, 204);
  });
}
