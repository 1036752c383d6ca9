import { AppError, SHED_HEADER } from "@saga/http";
import { describe, expect, it } from "vitest";
import {
  admissionLimit,
  eventually,
  order,
  raiseLane,
  startFakeUpstream,
  startGateway,
  USER_ID,
  user,
} from "./support.ts";

const userService = () =>
  startFakeUpstream((req) => {
    if (req.url === `/users/${USER_ID}`) return { body: user };
    if (req.url === "/users/not-a-uuid") return { status: 400, body: { error: "id must be a UUID" } };
    return { status: 404, body: { error: "user not found" } };
  });

describe("GET /users/:id/orders", () => {
  it("composes the user and its orders, forwarding the request id and trace to both", async () => {
    const users = await userService();
    const orders = await startFakeUpstream(() => ({ body: [order] }));
    const { app } = await startGateway([users], orders);
    const res = await app.request(`/users/${USER_ID}/orders`, {
      headers: {
        "x-request-id": "composed-1",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ user, orders: [order], next: null });
    expect(res.headers.get("link")).toBeNull();
    expect(users.received.map((r) => r.url)).toEqual([`/users/${USER_ID}`]);
    expect(orders.received.map((r) => r.url)).toEqual([`/orders?userId=${USER_ID}`]);
    for (const seen of [users.received[0], orders.received[0]]) {
      expect(seen?.headers["x-request-id"]).toBe("composed-1");
      expect(seen?.headers.traceparent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
      // One span of the gateway for the request, which its answer names.
      expect(seen?.headers.traceparent).toBe(res.headers.get("traceresponse"));
    }
  });

  it("asks the order-service for the page asked for, and says where the next starts: next and a Link", async () => {
    // Cursors as the order-service makes them; the gateway passes them on and never reads one.
    const c1 = `1740823200.000133_${order.id}`;
    const c2 = `1740823200.000166_${order.id}`;
    const orders = await startFakeUpstream((req) =>
      new URL(req.url, "http://x").searchParams.get("after") === c2
        ? { body: [order] }
        : {
            body: [order],
            headers: { link: `</orders?userId=${USER_ID}&limit=1&after=${c2}>; rel="next"` },
          },
    );
    const { app } = await startGateway([await userService()], orders);
    const first = await app.request(`/users/${USER_ID}/orders?limit=1&after=${c1}&other=x`);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ user, orders: [order], next: c2 });
    expect(first.headers.get("link")).toBe(`</users/${USER_ID}/orders?limit=1&after=${c2}>; rel="next"`);
    const last = await app.request(`/users/${USER_ID}/orders?limit=1&after=${c2}`);
    expect(await last.json()).toEqual({ user, orders: [order], next: null });
    expect(last.headers.get("link")).toBeNull();
    // The page's parameters, and only those, the first of each as the service reads them.
    const again = await app.request(`/users/${USER_ID}/orders?after=c%2B&after=${c1}`);
    expect(again.status).toBe(200);
    expect(orders.received.map((r) => r.url)).toEqual([
      `/orders?userId=${USER_ID}&limit=1&after=${c1}`,
      `/orders?userId=${USER_ID}&limit=1&after=${c2}`,
      `/orders?userId=${USER_ID}&after=c%2B`,
    ]);
  });

  it("passes the order-service's 400 for a bad limit or cursor through, once the user is found", async () => {
    const orders = await startFakeUpstream(() => ({
      status: 400,
      body: { error: "limit must be an integer from 1 to 1000" },
    }));
    const { app } = await startGateway([await userService()], orders);
    const res = await app.request(`/users/${USER_ID}/orders?limit=0`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "limit must be an integer from 1 to 1000" });
    // An unknown user is the user-service's answer, as before.
    const unknown = await app.request("/users/00000000-0000-4000-8000-000000000000/orders?limit=0");
    expect(unknown.status).toBe(404);
  });

  it("answers 502 when the order-service's page is larger than the gateway holds", async () => {
    const orders = await startFakeUpstream(() => ({ body: Array.from({ length: 40 }, () => order) }));
    const { app } = await startGateway([await userService()], orders, {
      UPSTREAM_MAX_RESPONSE_BYTES: "4096",
    });
    const res = await app.request(`/users/${USER_ID}/orders`);
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({
      error: "order-service is unavailable: order-service answered more than 4096 bytes",
    });
  });

  it("passes through the user-service's 404 for an unknown user and 400 for a bad id", async () => {
    const { app } = await startGateway([await userService()], await startFakeUpstream(() => ({ body: [] })));
    const unknown = await app.request("/users/00000000-0000-4000-8000-000000000000/orders");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: "user not found" });
    const bad = await app.request("/users/not-a-uuid/orders");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: "id must be a UUID" });
  });

  it("answers 502 while order-service is down, before and after it is ejected", async () => {
    const orders = await startFakeUpstream(() => ({ body: [] }));
    const { app } = await startGateway([await userService()], orders);
    await orders.kill();
    for (let i = 0; i < 2; i++) {
      const res = await app.request(`/users/${USER_ID}/orders`);
      expect(res.status).toBe(502);
      expect(await res.json()).toMatchObject({
        error: expect.stringMatching(/^order-service is unavailable/),
      });
    }
  });

  it("answers 502 when order-service fails and 504 when it is too slow", async () => {
    let reply: { status?: number; delayMs?: number; body: unknown } = {
      status: 500,
      body: { error: "internal error" },
    };
    const orders = await startFakeUpstream(() => reply);
    const { app } = await startGateway([await userService()], orders, { UPSTREAM_TIMEOUT_MS: "300" });
    const failed = await app.request(`/users/${USER_ID}/orders`);
    expect(failed.status).toBe(502);
    expect(await failed.json()).toMatchObject({ error: "order-service answered 500 for the user's orders" });

    reply = { delayMs: 1000, body: [] };
    const slow = await app.request(`/users/${USER_ID}/orders`);
    expect(slow.status).toBe(504);
    expect(await slow.json()).toMatchObject({ error: "order-service did not answer within 300 ms" });
  });

  it("passes the order-service's shed on, 503 with its Retry-After, so that the client backs off", async () => {
    const orders = await startFakeUpstream(() => ({
      status: 503,
      body: { error: "too many requests in flight" },
      headers: { "retry-after": "2" },
    }));
    const { app } = await startGateway([await userService()], orders);
    const res = await app.request(`/users/${USER_ID}/orders`);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("2");
    expect(await res.json()).toEqual({ error: "too many requests in flight" });
  });

  it("answers 503 with Retry-After when the gateway shuts down before order-service answered", async () => {
    const orders = await startFakeUpstream(() => new Promise<never>(() => {}));
    const gateway = await startGateway([await userService()], orders, { RETRY_AFTER_S: "3" });
    const pending = gateway.app.request(`/users/${USER_ID}/orders`);
    // The user in hand, its orders not.
    await eventually(async () => {
      const text = await (await gateway.metricsApp.request("/metrics")).text();
      return orders.received.length === 1 && /upstream="user-service",[^}]*outcome="2xx"\} 1/.test(text);
    });
    // The end of its drain.
    gateway.draining(AbortSignal.abort());
    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("3");
    expect(await res.json()).toMatchObject({
      error: "the gateway is shutting down and order-service had not answered; retry",
    });
  });

  it("answers 502 for any failure of the order-service's side but the gateway's shutdown, an upstream's 503 included", async () => {
    const gateway = await startGateway([await userService()], await startFakeUpstream(() => ({ body: [] })));
    // The upstream's own refusal when it has no instance to send to. A GET always has one today (in panic
    // mode all of them), so it is made here: the route passes on only the shutdown's answer.
    gateway.orders.send = () =>
      Promise.reject(
        new AppError("UNAVAILABLE", "order-service is unavailable: no instance", { retryAfterS: 1 }),
      );
    const res = await gateway.app.request(`/users/${USER_ID}/orders`);
    expect(res.status).toBe(502);
    expect(res.headers.get("retry-after")).toBeNull();
    expect(await res.json()).toMatchObject({
      error: "order-service is unavailable: order-service is unavailable: no instance",
    });
  });

  it("lowers no bound of the users' lane when the order-service's admission refuses the orders side", async () => {
    let ordersShed = false;
    const orders = await startFakeUpstream(() =>
      ordersShed
        ? {
            status: 503,
            body: { error: "overloaded: too many requests in flight; retry later" },
            headers: { "retry-after": "1", [SHED_HEADER]: "admission" },
          }
        : { body: [order] },
    );
    const gateway = await startGateway([await userService()], orders, {
      ADMISSION_READ_IN_FLIGHT: "16",
      ADMISSION_MIN_IN_FLIGHT: "2",
      ADMISSION_QUEUE: "0",
      ADMISSION_WARMUP_MS: "0",
    });
    const limit = () => admissionLimit(gateway, "users:read");
    const composed = () => gateway.app.request(`/users/${USER_ID}/orders`);
    await raiseLane(gateway, "users:read", composed);
    expect(await limit()).toBe(16);

    ordersShed = true;
    for (let i = 0; i < 8; i++) {
      const res = await composed();
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(res.headers.get(SHED_HEADER)).toBeNull();
    }
    // The user-service answered each on time: its lane has no reason to back off.
    expect(await limit()).toBe(16);
  });

  it("answers 502 while no user-service instance is in rotation and none answers", async () => {
    const users = await userService();
    const { app } = await startGateway([users], await startFakeUpstream(() => ({ body: [] })));
    await users.kill();
    const first = await app.request(`/users/${USER_ID}/orders`);
    expect(first.status).toBe(502);
    // Panic mode: out of rotation, it is tried all the same, and still refuses.
    const second = await app.request(`/users/${USER_ID}/orders`);
    expect(second.status).toBe(502);
    expect(await second.json()).toMatchObject({ error: "user-service is unreachable" });
  });
});
