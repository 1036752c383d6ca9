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

/** The query of the order-service's next page, from its `Link: <…>; rel="next"`; undefined on the last. */
function nextPage(link: string | string[] | undefined): URLSearchParams | undefined {
  for (const value of [link ?? []].flat()) {
    const target = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(value)?.[1];
    if (target !== undefined) return new URL(target, "http://order-service").searchParams;
  }
  return undefined;
}

/**
 * `GET /users/:id/orders?limit=&after=`: the user from user-service and a page of its orders from
 * order-service (`GET /orders?userId=`, sent the same `limit` and `after`), asked at the same time, as
 * `{"user", "orders", "next"}`: `next` is the `after` of the order-service's next page, which is also
 * this route's `Link: <…>; rel="next"`; null and none on the last page. The user-service's answer
 * decides first: its 400 or 404 is passed through as it is; then the order-service's 400 (a bad `limit`
 * or `after`, which the gateway leaves to it). A user without its orders is no answer: a failing
 * order-service is a 502 (a 504 when it was only slow); its shed (503 + Retry-After) is passed on, and
 * so is the gateway's shutdown.
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
    // The page asked for, as the order-service reads it (the first of each parameter): it checks them.
    const page = new URLSearchParams();
    for (const name of ["limit", "after"]) {
      const value = c.req.query(name);
      if (value !== undefined) page.set(name, value);
    }
    const query = page.size > 0 ? `&${page}` : "";
    const [user, list] = await Promise.allSettled([
      users.send({ method: "GET", path: `/users/${id}`, headers }, options),
      orders.send({ method: "GET", path: `/orders?userId=${id}${query}`, headers }, options),
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
    // The page asked for is not one (a bad limit or after): the client's to fix, as the service says.
    if (list.value.status === 400) return passThroughSubRequest(c, list.value);
    if (list.value.status !== 200) {
      throw new AppError("BAD_GATEWAY", `${orders.name} answered ${list.value.status} for the user's orders`);
    }
    composedFromUpstream(c);
    const next = nextPage(list.value.headers.link);
    const after = next?.get("after") ?? null;
    if (next && after !== null) {
      next.delete("userId");
      c.header("link", `</users/${id}/orders?${next}>; rel="next"`);
    }
    const body: UserOrders = {
      user: json<User>(user.value, users.name),
      orders: json<Order[]>(list.value, orders.name),
      next: after,
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
