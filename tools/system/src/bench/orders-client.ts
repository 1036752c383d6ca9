import { randomUUID } from "node:crypto";
import type { components } from "@saga/api-client";
import type { Dispatcher } from "undici";

type Order = components["schemas"]["Order"];
type CreateOrderRequest = components["schemas"]["CreateOrderRequest"];

/** An answer: its status, the order when the request succeeded, and the headers the bench looks at. */
export type OrderAnswer = {
  status: number;
  order?: Order;
  /** `Retry-After` of a shed request. */
  retryAfter?: string;
  /** The server held a `Prefer: wait` read (`Preference-Applied`). */
  held: boolean;
};

/**
 * The three order requests of the bench's load loops, sent with undici's `request` on the load client's
 * own pool. The typed client (@saga/api-client: openapi-fetch over undici's fetch) cost the load
 * client 430–660 µs of CPU a request against 95–105 µs this way (one process, 5,000 POSTs to a local
 * server, 32 at a time): on two shared cores the client took CPU the system under test needed, and its
 * event loop fell behind, which its latencies then counted (bench/JOURNAL.md, "Session 24"). The bodies
 * keep the document's types; the users are created with the typed client.
 */
export function ordersClient(baseUrl: string, dispatcher: Dispatcher) {
  const origin = new URL(baseUrl).origin;
  async function send(
    method: "GET" | "POST" | "DELETE",
    path: string,
    headers: Record<string, string>,
    body?: string,
  ): Promise<OrderAnswer> {
    const res = await dispatcher.request({ origin, path, method, headers, body });
    const ok = res.statusCode === 200 || res.statusCode === 201;
    const order = ok ? ((await res.body.json()) as Order) : undefined;
    if (!ok) await res.body.dump();
    const retryAfter = res.headers["retry-after"];
    return {
      status: res.statusCode,
      order,
      retryAfter: typeof retryAfter === "string" ? retryAfter : undefined,
      held: res.headers["preference-applied"] !== undefined,
    };
  }
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  return {
    /** POST /orders with a fresh Idempotency-Key. */
    create: (token: string, request: CreateOrderRequest) =>
      send(
        "POST",
        "/orders",
        { ...bearer(token), "content-type": "application/json", "idempotency-key": randomUUID() },
        JSON.stringify(request),
      ),
    /** GET /orders/:id, held up to `waitS` seconds when given (`Prefer: wait`). */
    get: (token: string, id: string, waitS?: number) =>
      send(
        "GET",
        `/orders/${id}`,
        waitS === undefined ? bearer(token) : { ...bearer(token), prefer: `wait=${waitS}` },
      ),
    /** DELETE /orders/:id. */
    cancel: (token: string, id: string) => send("DELETE", `/orders/${id}`, bearer(token)),
  };
}
