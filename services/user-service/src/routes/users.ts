import { CreateUserRequest } from "@saga/contracts";
import { type AppEnv, AppError, callerSubject, idempotencyKey, parseJsonBody, uuidParam } from "@saga/http";
import { type Database, idempotent, requestFingerprint } from "@saga/messaging";
import { type Logger, traceIdOf } from "@saga/observability";
import type { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { createUser, findUser } from "../domain/users.ts";

export type UserRoutesDeps = { db: Database; logger: Logger };

/** `POST /users` (idempotent with `Idempotency-Key`) and `GET /users/:id`. */
export function registerUserRoutes(app: Hono<AppEnv>, { db, logger }: UserRoutesDeps) {
  app.post("/users", async (c) => {
    const body = await parseJsonBody(c, CreateUserRequest);
    const key = idempotencyKey(c);
    const scoped = key === undefined ? undefined : { subject: callerSubject(c), key };
    const result = await idempotent(db, scoped, requestFingerprint("POST /users", body), async (tx) => {
      const user = await createUser(tx, body);
      if (!user) throw new AppError("CONFLICT", `username ${body.username} is taken`);
      return { status: 201, body: user };
    });
    if (result.outcome === "mismatch") {
      throw new AppError("UNPROCESSABLE", "Idempotency-Key was already used for a different request");
    }
    // Debug: a line per request is a cost of the hot path.
    logger.debug(
      {
        requestId: c.get("requestId"),
        // The trace of the request (the gateway's), as the gateway's answer names it.
        traceId: traceIdOf(c.req.header("traceparent")),
        body: result.body,
        outcome: result.outcome,
      },
      "user created",
    );
    return c.json(result.body, result.status as ContentfulStatusCode);
  });

  app.get("/users/:id", async (c) => {
    const user = await findUser(db.db, uuidParam(c, "id"));
    if (!user) throw new AppError("NOT_FOUND", "user not found");
    return c.json(user);
  });
}
