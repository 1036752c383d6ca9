import { randomUUID } from "node:crypto";
import { SHED_HEADER } from "@saga/http";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { describe, expect, it, vi } from "vitest";
import { mintToken } from "../src/gateway.ts";
import {
  AUTH_SECRET,
  admissionLimit,
  eventually,
  type FakeUpstream,
  INTERNAL_SECRET,
  type Reply,
  raiseLane,
  startFakeUpstream,
  startGateway,
  tokenFor,
} from "./support.ts";

const A = randomUUID();
const B = randomUUID();
const ORDER_OF_A = randomUUID();
const ORDER_OF_B = randomUUID();
const orderOf = (id: string, userId: string) => ({
  id,
  userId,
  amount: 10,
  status: "PENDING",
  createdAt: "2025-01-01T00:00:00.000Z",
});

async function system(env: Record<string, string> = {}) {
  const users = await startFakeUpstream((req) => ({
    status: req.method === "POST" ? 201 : 200,
    body: { id: req.url.split("/")[2] },
  }));
  const notFound: Reply = { status: 404, body: { error: "order not found" }, headers: { vary: "prefer" } };
  // As the order-service cancels: a user's own order only, another's is not found.
  const cancel = (req: { headers: Record<string, unknown> }, owner: string): Reply =>
    req.headers["x-auth-role"] === "user" && req.headers["x-auth-subject"] !== owner
      ? notFound
      : { status: 204 };
  const orders = await startFakeUpstream((req): Reply => {
    if (req.url.startsWith(`/orders/${ORDER_OF_A}`))
      return req.method === "DELETE" ? cancel(req, A) : { body: orderOf(ORDER_OF_A, A) };
    // The headers the order-service sends with an order read with `Prefer: wait`, and with its 404.
    if (req.url.startsWith(`/orders/${ORDER_OF_B}`))
      return req.method === "DELETE"
        ? cancel(req, B)
        : { body: orderOf(ORDER_OF_B, B), headers: { vary: "prefer", "preference-applied": "wait=3" } };
    if (req.url.startsWith("/orders?")) return { body: [] };
    if (req.method === "POST") return { status: 201, body: orderOf(randomUUID(), A) };
    return notFound;
  });
  const gateway = await startGateway([users], orders, env);
  return { users, orders, app: gateway.app, metrics: gateway.metricsApp };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const json = { "content-type": "application/json" };
const sign = (claims: Record<string, unknown>, secret = AUTH_SECRET, alg = "HS256") =>
  new SignJWT(claims).setProtectedHeader({ alg }).sign(new TextEncoder().encode(secret));
const now = () => Math.floor(Date.now() / 1000);
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
const requestsTo = (u: FakeUpstream) => u.received.map((r) => `${r.method} ${r.url}`);

describe("authentication", () => {
  const good = { sub: A, iss: "outbox-saga", aud: "outbox-saga-api", exp: now() + 600 };

  it.each([
    ["no Authorization header", async () => ""],
    ["an empty bearer", async () => "Bearer "],
    ["a Basic credential", async () => "Basic dXNlcjpwYXNz"],
    ["garbage", async () => "Bearer not a token"],
    ["an expired token", async () => `Bearer ${await sign({ ...good, exp: now() - 120 })}`],
    ["a wrong issuer", async () => `Bearer ${await sign({ ...good, iss: "someone-else" })}`],
    ["a wrong audience", async () => `Bearer ${await sign({ ...good, aud: "another-api" })}`],
    ["no subject", async () => `Bearer ${await sign({ ...good, sub: undefined })}`],
    ["no expiry", async () => `Bearer ${await sign({ ...good, exp: undefined })}`],
    ["another key", async () => `Bearer ${await sign(good, "another-secret-of-at-least-32-characters!!")}`],
    ["alg: none", async () => `Bearer ${b64({ alg: "none", typ: "JWT" })}.${b64(good)}.`],
    [
      "a tampered payload",
      async () => {
        const [header, , signature] = (await sign(good)).split(".");
        return `Bearer ${header}.${b64({ ...good, role: "admin" })}.${signature}`;
      },
    ],
    [
      "a tampered signature",
      async () => {
        const token = await sign(good);
        return `Bearer ${token.slice(0, -4)}${token.endsWith("AAAA") ? "BBBB" : "AAAA"}`;
      },
    ],
    [
      "HS512 with the right secret (not a pinned algorithm)",
      async () => `Bearer ${await sign(good, AUTH_SECRET, "HS512")}`,
    ],
  ])("answers 401 with a Bearer challenge for %s, and forwards nothing", async (_what, header) => {
    const { users, app, metrics } = await system();
    const res = await app.request(`/users/${A}`, { headers: { authorization: await header() } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="outbox-saga"/);
    expect(await res.json()).toMatchObject({ error: expect.any(String) });
    expect(users.received).toEqual([]);
    expect(await (await metrics.request("/metrics")).text()).toMatch(
      /gateway_auth_failures_total\{reason="\w+"[^}]*\} 1/,
    );
  });

  it("accepts a good token, with the clock skew on exp", async () => {
    const { app } = await system();
    expect((await app.request(`/users/${A}`, { headers: bearer(await sign(good)) })).status).toBe(200);
    const justExpired = await sign({ ...good, exp: now() - 5 });
    expect((await app.request(`/users/${A}`, { headers: bearer(justExpired) })).status).toBe(200);
  });

  it("with a JWKS, accepts the provider's RS256 tokens and refuses one signed with its public key as an HMAC secret", async () => {
    const { publicKey, privateKey } = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    const jwks = await startFakeUpstream(() => ({ body: { keys: [jwk] } }));
    const { app } = await system({ AUTH_SECRET: "", AUTH_JWKS_URL: `${jwks.url}/jwks.json` });
    const claims = { sub: A, iss: "outbox-saga", aud: "outbox-saga-api", exp: now() + 600 };
    const rs256 = await new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(privateKey);
    expect((await app.request(`/users/${A}`, { headers: bearer(rs256) })).status).toBe(200);

    // Algorithm confusion: the public key (public by definition) used as an HS256 secret.
    const confused = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: "k1" })
      .sign(new TextEncoder().encode(JSON.stringify(jwk)));
    const res = await app.request(`/users/${A}`, { headers: bearer(confused) });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
  });

  it.each([
    ["answers 503", { status: 503, body: { error: "down" } }],
    // jose asks with redirect: "manual", so a redirect is an answer that is not the keys.
    ["redirects", { status: 302, headers: { location: "https://idp.example/jwks.json" } }],
    ["answers an HTML page", { body: "<html>proxy error</html>", headers: { "content-type": "text/html" } }],
    ["answers JSON that is no key set", { body: { keys: "none" } }],
  ] satisfies [string, Reply][])(
    "answers 503 with Retry-After, not a 401, while the JWKS endpoint %s, and verifies once it serves the keys",
    async (_what, failure) => {
      const { publicKey, privateKey } = await generateKeyPair("RS256");
      const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
      let down = true;
      const jwks = await startFakeUpstream(() => (down ? failure : { body: { keys: [jwk] } }));
      const { users, app, metrics } = await system({
        AUTH_SECRET: "",
        AUTH_JWKS_URL: `${jwks.url}/jwks.json`,
      });
      const claims = { sub: A, iss: "outbox-saga", aud: "outbox-saga-api", exp: now() + 600 };
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: "RS256", kid: "k1" })
        .sign(privateKey);

      const res = await app.request(`/users/${A}`, { headers: bearer(token) });
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      expect(res.headers.get("www-authenticate")).toBeNull();
      expect(await res.json()).toMatchObject({
        error: "the token cannot be verified now: its keys are unavailable",
      });
      expect(users.received).toEqual([]);
      const text = await (await metrics.request("/metrics")).text();
      expect(text).toMatch(/gateway_auth_failures_total\{reason="keys_unavailable"[^}]*\} 1/);
      expect(text).not.toMatch(/reason="malformed_token"/);

      down = false;
      expect((await app.request(`/users/${A}`, { headers: bearer(token) })).status).toBe(200);
    },
  );

  it("with a JWKS that answers, refuses a token signed by a key it does not hold: 401", async () => {
    const ours = await generateKeyPair("RS256");
    const theirs = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(ours.publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    const jwks = await startFakeUpstream(() => ({ body: { keys: [jwk] } }));
    const { app, metrics } = await system({ AUTH_SECRET: "", AUTH_JWKS_URL: `${jwks.url}/jwks.json` });
    const claims = { sub: A, iss: "outbox-saga", aud: "outbox-saga-api", exp: now() + 600 };
    for (const kid of ["unknown", "k1"]) {
      const token = await new SignJWT(claims)
        .setProtectedHeader({ alg: "RS256", kid })
        .sign(theirs.privateKey);
      const res = await app.request(`/users/${A}`, { headers: bearer(token) });
      expect(res.status, kid).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
    }
    expect(await (await metrics.request("/metrics")).text()).toMatch(
      /gateway_auth_failures_total\{reason="bad_signature"[^}]*\} 2/,
    );
  });

  it("with a secret, refuses an RS256 token whatever its signature", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const { app } = await system();
    const rs256 = await new SignJWT(good).setProtectedHeader({ alg: "RS256" }).sign(privateKey);
    expect((await app.request(`/users/${A}`, { headers: bearer(rs256) })).status).toBe(401);
  });

  it("refuses a token it accepted before, once that token expires", async () => {
    const { app, metrics } = await system({ AUTH_CLOCK_SKEW_S: "0" });
    const shortLived = await sign({ ...good, exp: now() + 2 });
    expect((await app.request(`/users/${A}`, { headers: bearer(shortLived) })).status).toBe(200);
    expect((await app.request(`/users/${A}`, { headers: bearer(shortLived) })).status).toBe(200);
    await eventually(
      async () => (await app.request(`/users/${A}`, { headers: bearer(shortLived) })).status === 401,
      10_000,
    );
    expect(await (await metrics.request("/metrics")).text()).toMatch(
      /gateway_auth_failures_total\{reason="expired"[^}]*\} 1/,
    );
  });

  it("refuses a forged copy of a token it accepted", async () => {
    const { users, app } = await system();
    const token = await sign(good);
    expect((await app.request(`/users/${A}`, { headers: bearer(token) })).status).toBe(200);
    const [header, , signature] = token.split(".");
    const forged = [
      `${header}.${b64({ ...good, sub: B })}.${signature}`,
      `${token.slice(0, -4)}${token.endsWith("AAAA") ? "BBBB" : "AAAA"}`,
    ];
    for (const f of forged)
      expect((await app.request(`/users/${B}`, { headers: bearer(f) })).status).toBe(401);
    expect(requestsTo(users)).toEqual([`GET /users/${A}`]);
  });

  it("leaves the probes open", async () => {
    const { app } = await system();
    const open = { headers: { authorization: "" } };
    expect((await app.request("/health", open)).status).toBe(200);
    expect((await app.request("/ready", open)).status).toBe(200);
  });
});

describe("authorization per user", () => {
  it("lets a user read itself and its own orders, and answers 404 for another's without asking a service", async () => {
    const { users, orders, app } = await system();
    const asA = { headers: bearer(await tokenFor(A)) };

    expect((await app.request(`/users/${A}`, asA)).status).toBe(200);
    expect((await app.request(`/users/${A}/orders`, asA)).status).toBe(200);
    expect((await app.request(`/orders?userId=${A}`, asA)).status).toBe(200);
    expect((await app.request(`/orders/${ORDER_OF_A}`, asA)).status).toBe(200);
    expect((await app.request(`/orders/${ORDER_OF_A}`, { ...asA, method: "HEAD" })).status).toBe(200);
    expect((await app.request(`/orders/${ORDER_OF_B}`, { ...asA, method: "HEAD" })).status).toBe(404);
    const seenUsers = requestsTo(users).length;
    const seenOrders = requestsTo(orders).length;

    for (const path of [
      `/users/${B}`,
      `/users/${B}/orders`,
      `/orders?userId=${B}`,
      `/orders?userId=${A}&userId=${B}`,
    ]) {
      const res = await app.request(path, asA);
      expect(res.status, path).toBe(404);
      expect(await res.json()).toMatchObject({ error: "user not found" });
    }
    expect(requestsTo(users)).toHaveLength(seenUsers);
    expect(requestsTo(orders)).toHaveLength(seenOrders);

    // An order's owner is in the order: B's order answers as one that does not exist.
    const other = await app.request(`/orders/${ORDER_OF_B}`, asA);
    expect(other.status).toBe(404);
    const body = await other.text();
    expect(JSON.parse(body)).toMatchObject({ error: "order not found" });
    expect(body).not.toContain(B);
  });

  it("leaves an id that is no UUID to the service, whose 400 says so (a 404 would say: someone else's)", async () => {
    const { users, orders, app } = await system();
    const asA = bearer(await tokenFor(A));
    await app.request("/users/not-a-uuid", { headers: asA });
    await app.request("/orders?userId=42", { headers: asA });
    await app.request("/orders", {
      method: "POST",
      headers: { ...json, ...asA },
      body: JSON.stringify({ userId: "abc", amount: 10 }),
    });
    expect(requestsTo(users)).toEqual(["GET /users/not-a-uuid"]);
    expect(requestsTo(orders)).toEqual(["GET /orders?userId=42", "POST /orders"]);
  });

  it("answers another user's order exactly as one that does not exist, headers included", async () => {
    const { app } = await system();
    const asA = { headers: { ...bearer(await tokenFor(A)), prefer: "wait=3" } };
    const seen = async (res: Response) => ({
      status: res.status,
      // Every header, by name and value, but those of each answer's own (its id, its trace, its second).
      headers: [...res.headers].map(([name, value]) =>
        name === "x-request-id" || name === "traceresponse" || name === "date" ? [name] : [name, value],
      ),
      // The same words but for its request id; a HEAD has none.
      body: (await res.text()).replace(/"requestId":"[^"]*"/, ""),
    });
    for (const method of ["GET", "HEAD", "DELETE"]) {
      const other = await seen(await app.request(`/orders/${ORDER_OF_B}`, { ...asA, method }));
      const missing = await seen(await app.request(`/orders/${randomUUID()}`, { ...asA, method }));
      expect(other, method).toEqual(missing);
      expect(other.status).toBe(404);
    }
  });

  it("lets a user order only for itself: another's order is a 404 that reaches no service", async () => {
    const { orders, app } = await system();
    const asA = bearer(await tokenFor(A));
    const forB = await app.request("/orders", {
      method: "POST",
      headers: { ...json, ...asA },
      body: JSON.stringify({ userId: B, amount: 10 }),
    });
    expect(forB.status).toBe(404);
    // Of duplicated keys JSON.parse keeps the last, as the order-service does.
    const sneaky = await app.request("/orders", {
      method: "POST",
      headers: { ...json, ...asA },
      body: `{"userId":"${A}","amount":10,"userId":"${B}"}`,
    });
    expect(sneaky.status).toBe(404);
    expect(requestsTo(orders)).toEqual([]);

    const forA = await app.request("/orders", {
      method: "POST",
      headers: { ...json, ...asA },
      body: JSON.stringify({ userId: A.toUpperCase(), amount: 10 }),
    });
    expect(forA.status).toBe(201);
    expect(requestsTo(orders)).toEqual(["POST /orders"]);
  });

  it("sends a user's cancel as it is, with the user's id and role, for the order-service to cancel its own orders only", async () => {
    const { orders, app } = await system();
    const asA = { method: "DELETE", headers: bearer(await tokenFor(A)) };
    expect((await app.request(`/orders/${ORDER_OF_B}`, asA)).status).toBe(404);
    expect((await app.request(`/orders/${randomUUID()}`, asA)).status).toBe(404);
    expect((await app.request(`/orders/${ORDER_OF_A}`, asA)).status).toBe(204);
    // No read first: the cancel alone, which names who asks.
    expect(
      orders.received.map((r) => [r.method, r.headers["x-auth-subject"], r.headers["x-auth-role"]]),
    ).toEqual([
      ["DELETE", A, "user"],
      ["DELETE", A, "user"],
      ["DELETE", A, "user"],
    ]);
    // An id that decodes to something no request path may hold is sent upstream as it came.
    await app.request("/orders/%20", asA);
    expect(requestsTo(orders).at(-1)).toBe("DELETE /orders/%20");
  });

  it("cancels a user's own order while the order-service sheds reads, and lowers no lane for a refused read", async () => {
    let readsShed = false;
    const users = await startFakeUpstream(() => ({ body: { id: A } }));
    // The order-service's read lane full (clients polling their orders): it refuses reads, marked as its
    // admission's, and still serves its writes.
    const orders = await startFakeUpstream((req): Reply => {
      if (req.method === "DELETE") return { status: 204 };
      if (readsShed && req.method !== "POST")
        return {
          status: 503,
          body: { error: "overloaded: too many requests in flight; retry later" },
          headers: { "retry-after": "1", [SHED_HEADER]: "admission" },
        };
      return req.method === "POST"
        ? { status: 201, body: orderOf(ORDER_OF_A, A) }
        : { body: orderOf(ORDER_OF_A, A) };
    });
    const gateway = await startGateway([users], orders, {
      ADMISSION_READ_IN_FLIGHT: "16",
      ADMISSION_WRITE_IN_FLIGHT: "16",
      ADMISSION_MIN_IN_FLIGHT: "2",
      ADMISSION_QUEUE: "0",
      ADMISSION_WARMUP_MS: "0",
      // Only a shed may lower a lane here: a slow answer on a machine busy with other tests lowered
      // orders:write by a step (16 → 15.2), where each cancel's shed read took it down by a tenth.
      ADMISSION_LATENCY_TOLERANCE: "1000",
    });
    const asA = bearer(await tokenFor(A));
    const limit = (lane: string) => admissionLimit(gateway, lane);
    // Both lanes raised to their bound by answers on time, so that a drop would show.
    const raise = async (lane: string, request: () => unknown) => {
      await raiseLane(gateway, lane, request);
      expect(await limit(lane)).toBe(16);
    };
    await raise("orders:write", () =>
      gateway.app.request("/orders", { method: "POST", body: "{}", headers: json }),
    );
    await raise("orders:read", () => gateway.app.request(`/orders/${ORDER_OF_A}`));

    readsShed = true;
    for (let i = 0; i < 8; i++)
      expect(
        (await gateway.app.request(`/orders/${ORDER_OF_A}`, { method: "DELETE", headers: asA })).status,
      ).toBe(204);
    expect(orders.received.filter((r) => r.method === "DELETE")).toHaveLength(8);
    expect(await limit("orders:write")).toBe(16);
  });

  it("sends a user's HEAD once, as a read of the order with the user's id and role and the client's Prefer", async () => {
    const users = await startFakeUpstream(() => ({ body: { id: A } }));
    // As the order-service does: a read of a PENDING order with Prefer: wait is held until the saga decides
    // it (here past the gateway's 1 s upstream timeout).
    const orders = await startFakeUpstream((req): Reply => {
      return { body: orderOf(ORDER_OF_A, A), delayMs: req.headers.prefer ? 1500 : 0 };
    });
    const { app } = await startGateway([users], orders);
    const asA = bearer(await tokenFor(A));
    // Held over the held requests' connections and time.
    const head = await app.request(`/orders/${ORDER_OF_A}`, {
      method: "HEAD",
      headers: { ...asA, prefer: "wait=2" },
    });
    expect(head.status).toBe(200);
    // No read first: the order-service answers another's order 404 itself. A GET, whose answer's owner the
    // gateway checks as a GET's (an older order-service answered anyone's), and whose length the HEAD's is.
    expect(
      orders.received.map((r) => [
        r.method,
        r.headers.prefer,
        r.headers["x-auth-subject"],
        r.headers["x-auth-role"],
      ]),
    ).toEqual([["GET", "wait=2", A, "user"]]);
  });

  it("keeps POST /users and every other route to the admin", async () => {
    const { users, app } = await system();
    const asA = bearer(await tokenFor(A));
    const create = await app.request("/users", {
      method: "POST",
      headers: { ...json, ...asA },
      body: JSON.stringify({ username: "mallory", initialBalance: 1_000_000 }),
    });
    expect(create.status).toBe(403);
    expect(await create.json()).toMatchObject({ error: "only an admin may create users" });
    // A method the path does not serve is a 405 (with Allow) for everyone, before authorization.
    expect((await app.request(`/users/${A}`, { method: "PUT", headers: asA })).status).toBe(405);
    expect((await app.request(`/users/${A}/x`, { headers: asA })).status).toBe(404);
    expect(users.received).toEqual([]);
  });

  it("lets the admin do everything", async () => {
    const { users, orders, app } = await system();
    const asAdmin = bearer(await tokenFor("ops", { admin: true }));
    expect(
      (await app.request("/users", { method: "POST", headers: { ...json, ...asAdmin }, body: "{}" })).status,
    ).toBe(201);
    expect((await app.request(`/users/${B}`, { headers: asAdmin })).status).toBe(200);
    expect((await app.request(`/orders/${ORDER_OF_B}`, { headers: asAdmin })).status).toBe(200);
    expect((await app.request(`/orders?userId=${B}`, { headers: asAdmin })).status).toBe(200);
    const post = {
      method: "POST",
      headers: { ...json, ...asAdmin },
      body: JSON.stringify({ userId: B, amount: 1 }),
    };
    expect((await app.request("/orders", post)).status).toBe(201);
    expect((await app.request(`/orders/${ORDER_OF_B}`, { method: "DELETE", headers: asAdmin })).status).toBe(
      204,
    );
    expect(requestsTo(users)).toEqual(["POST /users", `GET /users/${B}`]);
    expect(requestsTo(orders)).toContain(`DELETE /orders/${ORDER_OF_B}`);
  });

  it("answers 502, not the service's 401, when a service refuses the gateway's internal credential", async () => {
    // Services configured with another INTERNAL_SECRET than the gateway's: they answer as internalCredential
    // does (@saga/http), a 401 without WWW-Authenticate, to anything but their probes.
    const refusing = (req: { headers: Record<string, unknown> }): Reply | undefined =>
      req.headers["x-internal-credential"] === "the services' own secret of at least 32 chars"
        ? undefined
        : { status: 401, body: { error: "this service answers only the gateway", requestId: "r" } };
    const users = await startFakeUpstream((req) => refusing(req) ?? { body: { id: A } });
    const orders = await startFakeUpstream((req) => refusing(req) ?? { body: orderOf(ORDER_OF_A, A) });
    const { app, logger } = await startGateway([users], orders);
    const warn = vi.spyOn(logger, "warn");
    const asA = bearer(await tokenFor(A));
    for (const [method, path, headers] of [
      ["GET", `/users/${B}`, {}],
      ["GET", `/orders/${ORDER_OF_A}`, asA],
      ["DELETE", `/orders/${ORDER_OF_A}`, asA],
      ["GET", `/users/${A}/orders`, asA],
    ] as const) {
      const res = await app.request(path, { method, headers });
      expect(res.status, `${method} ${path}`).toBe(502);
      expect(res.headers.get("www-authenticate")).toBeNull();
      expect(await res.json()).toMatchObject({
        error: "an upstream service refused the gateway's credential",
      });
    }
    // Each is logged with the instance that refused, for the operator: the clients' tokens were fine.
    const logged = warn.mock.calls
      .map(([fields]) => (fields as { err?: Error }).err)
      .filter((err) => err?.name === "CredentialRefusedError")
      .map((err) => err?.message);
    expect(logged).toHaveLength(4);
    for (const message of logged)
      expect(message).toMatch(/^127\.0\.0\.1:\d+ refused the gateway's internal credential/);
  });

  it("says not ready, and why, while the services refuse its internal credential", async () => {
    const users = await startFakeUpstream(() => ({ body: { id: A } }));
    const orders = await startFakeUpstream(() => ({ body: orderOf(ORDER_OF_A, A) }));
    for (const service of [users, orders])
      service.credential = "the services' own secret of at least 32 chars";
    const { app } = await startGateway([users], orders);
    const ready = async () => {
      const res = await app.request("/ready");
      return { status: res.status, error: ((await res.json()) as { error?: string }).error };
    };
    expect(await ready()).toEqual({
      status: 503,
      error:
        "user-service refused the gateway's internal credential (INTERNAL_SECRET differs from the services'); " +
        "order-service refused the gateway's internal credential (INTERNAL_SECRET differs from the services')",
    });
    // A service that refused it and then stops answering is said to be down, not to refuse it still.
    await orders.kill();
    await eventually(
      async () => (await ready()).error?.endsWith("no healthy instance of order-service") === true,
    );
    await orders.revive();
    // Once the services take it (a secret set right, and restarted), ready at their next health check.
    users.credential = INTERNAL_SECRET;
    await eventually(async () => (await ready()).error?.startsWith("order-service refused") === true);
    orders.credential = INTERNAL_SECRET;
    await eventually(async () => (await ready()).status === 200);
  });

  it("forwards the verified identity and the internal credential, never the client's own", async () => {
    const { users, app } = await system();
    await app.request(`/users/${A}`, {
      headers: {
        ...bearer(await tokenFor(A)),
        "x-auth-subject": B,
        "x-auth-role": "admin",
        "x-internal-credential": "forged",
      },
    });
    const [seen] = users.received;
    expect(seen?.headers["x-auth-subject"]).toBe(A);
    expect(seen?.headers["x-auth-role"]).toBe("user");
    expect(seen?.headers["x-internal-credential"]).toBe(INTERNAL_SECRET);
    expect(seen?.headers.authorization).toBeUndefined();
  });
});

describe("rate limits", () => {
  it("answers 429 with Retry-After once a subject's bucket is empty, counts it, and recovers", async () => {
    const { app, metrics } = await system({ RATE_LIMIT_SUBJECT_PER_S: "4", RATE_LIMIT_SUBJECT_BURST: "2" });
    const order = async (token: string) =>
      app.request("/orders", {
        method: "POST",
        headers: { ...json, ...bearer(token) },
        body: JSON.stringify({ userId: A, amount: 1 }),
      });
    const a = await tokenFor(A);
    expect((await order(a)).status).toBe(201);
    expect((await order(a)).status).toBe(201);
    const limited = await order(a);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("1");
    expect(await limited.json()).toMatchObject({ error: expect.stringContaining("too many requests") });
    // Another subject has a bucket of its own.
    expect((await order(await tokenFor("ops", { admin: true }))).status).toBe(201);
    expect(await (await metrics.request("/metrics")).text()).toMatch(
      /gateway_rate_limited_total\{route="POST \/orders",scope="subject"[^}]*\} 1/,
    );
    // Reads are not limited.
    for (let i = 0; i < 5; i++)
      expect((await app.request(`/users/${A}`, { headers: bearer(a) })).status).toBe(200);
    await eventually(async () => (await order(a)).status === 201, 5000);
  });

  it("limits a client address across subjects", async () => {
    const { app } = await system({ RATE_LIMIT_ADDRESS_PER_S: "1", RATE_LIMIT_ADDRESS_BURST: "3" });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await app.request("/users", {
        method: "POST",
        headers: {
          ...json,
          ...bearer(await mintToken({ secret: AUTH_SECRET, subject: `ops-${i}`, role: "admin" })),
        },
        body: "{}",
      });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([201, 201, 201, 429]);
  });
});
