import type { Order, User, UserOrders } from "@saga/contracts";
import { type AppEnv, AppError } from "@saga/http";
import type { Hono } from "hono";
import {
  CredentialRefusedError,
  clientSignal,
  composedFromUpstream,
  passThrough,
  passThroughSubRequest,
  upstreamHeaders,
} from "../forward.ts";
import { ShutdownError, type Upstream, type UpstreamResponse } from "../upstream.ts";

export type UserOrdersRouteDeps = { users: Upstream; orders: Upstream; timeoutMs: number };

/**
 * `GET /users/:id/orders`: the user from user-service and its orders from order-service, asked at the
 * same time, as `{"user", "orders"}`. The user-service's answer decides first: its 400 or 404 is passed
 * through as it is. A user without its orders is no answer: a failing order-service is a 502 (a 504 when
 * it was only slow); its shed (503 + Retry-After) is passed on, and so is the gateway's shutdown.
 */
export function registerUserOrdersRoute(
  app: Hono<AppEnv>,
  { users, orders, timeoutMs }: UserOrdersRouteDeps,
) {
  app.get("/users/:id/orders", async (c) => {
    const id = encodeURIComponent(c.req.param("id"));
    // Identity: the composed body is parsed here, so it must not come compressed.
    const headers = { ...upstreamHeaders(c), "accept-encoding": "identity" };
    const options = { timeoutMs, clientSignal: clientSignal(c) };
    const [user, list] = await Promise.allSettled([
      users.send({ method: "GET", path: `/users/${id}`, headers }, options),
      orders.send({ method: "GET", path: `/orders?userId=${id}`, headers }, options),
    ]);
    if (user.status === "rejected") throw user.reason;
    if (user.value.status !== 200) return passThrough(c, user.value);
    if (list.status === "rejected") {
      const err = list.reason;
      // Slow (504), or ended by the gateway's shutdown (a read: 503 + Retry-After, as any such request).
      if (err instanceof ShutdownError || (err instanceof AppError && err.code === "GATEWAY_TIMEOUT"))
        throw err;
      throw new AppError("BAD_GATEWAY", `${orders.name} is unavailable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // Shed by the order-service (its admission, 503 with Retry-After): the client is told when to come back,
    // and this request's lane (the users') is not told to back off for the order-service's reads.
    if (list.value.status === 503 && list.value.headers["retry-after"] !== undefined)
      return passThroughSubRequest(c, list.value);
    if (list.value.status === 401) throw new CredentialRefusedError(list.value.target);
    if (list.value.status !== 200) {
      throw new AppError("BAD_GATEWAY", `${orders.name} answered ${list.value.status} for the user's orders`);
    }
    composedFromUpstream(c);
    const body: UserOrders = {
      user: json<User>(user.value, users.name),
      orders: json<Order[]>(list.value, orders.name),
    };
    return c.json(body);
  });
}

function json<T>(res: UpstreamResponse, upstream: string): T {
  try {
    return JSON.parse(res.body.toString("utf8")) as T;
  } catch (err) {
    throw new AppError("BAD_GATEWAY", `${upstream} answered with a body that is not JSON`, { cause: err });
  }
}
