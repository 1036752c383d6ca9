import { CreateOrderRequest, IdParam } from "@saga/contracts";
import { type AppEnv, AppError, callerSubject, idempotencyKey, parseJsonBody, uuidParam } from "@saga/http";
import { type Database, idempotent, requestFingerprint } from "@saga/messaging";
import { type Logger, nextTraceparent } from "@saga/observability";
import type { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { cancelOrder, createOrder, findOrder, listOrders } from "../domain/orders.ts";
import type { SagaMetrics } from "../metrics.ts";

export type OrderRoutesDeps = { db: Database; logger: Logger; saga: SagaMetrics };

/**
 * `POST /orders` (idempotent with `Idempotency-Key`) starts a saga, `GET /orders/:id`,
 * `GET /orders?userId=` for the gateway's composed read, and `DELETE /orders/:id` cancels.
 */
export function registerOrderRoutes(app: Hono<AppEnv>, { db, logger, saga }: OrderRoutesDeps) {
  app.post("/orders", async (c) => {
    const body = await parseJsonBody(c, CreateOrderRequest);
    const key = idempotencyKey(c);
    const scoped = key === undefined ? undefined : { subject: callerSubject(c), key };
    const traceparent = nextTraceparent(c.req.header("traceparent"));
    const result = await idempotent(db, scoped, requestFingerprint("POST /orders", body), async (tx) => ({
      status: 201,
      body: await createOrder(tx, body, traceparent),
    }));
    if (result.outcome === "mismatch") {
      throw new AppError("UNPROCESSABLE", "Idempotency-Key was already used for a different request");
    }
    logger.info(
      { requestId: c.get("requestId"), order: result.body, outcome: result.outcome },
      "order created",
    );
    return c.json(result.body, result.status as ContentfulStatusCode);
  });

  app.get("/orders", async (c) => {
    const userId = c.req.query("userId");
    if (userId === undefined) throw new AppError("BAD_REQUEST", "query parameter userId is required");
    if (!IdParam.safeParse(userId).success) throw new AppError("BAD_REQUEST", "userId must be a UUID");
    return c.json(await listOrders(db.db, userId.toLowerCase()));
  });

  app.get("/orders/:id", async (c) => {
    const order = await findOrder(db.db, uuidParam(c, "id"));
    if (!order) throw new AppError("NOT_FOUND", "order not found");
    return c.json(order);
  });

  app.delete("/orders/:id", async (c) => {
    const id = uuidParam(c, "id");
    const traceparent = nextTraceparent(c.req.header("traceparent"));
    const transition = await db.transaction((tx) => cancelOrder(tx, id, traceparent));
    if (!transition) throw new AppError("NOT_FOUND", "order not found");
    if (transition.kind === "changed") {
      saga.record(transition);
      logger.info({ requestId: c.get("requestId"), orderId: id }, "order canceled");
    }
    return c.body(null, 204);
  });
}
