import { randomUUID } from "node:crypto";
import { honoPath, USER_SERVICE_ROUTES, type User } from "@saga/contracts";
import { idempotencyKeys, users } from "@saga/db/user";
import { createLogger } from "@saga/observability";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { count, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createUserService, type UserService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("user_http");
let service: UserService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  service = await startInProcess(testEnv(databaseUrl(), await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  await service?.stop();
  await db?.close();
});

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});
const post = (body: unknown, headers?: Record<string, string>) =>
  service.app.request("/users", json(body, headers));
const name = () => `user-${randomUUID().slice(0, 8)}`;
const userCount = async () => (await db.db.select({ n: count() }).from(users))[0]?.n;

describe("POST /users and GET /users/:id", () => {
  it("creates a user whose balance is the initial balance, and reads it back", async () => {
    const username = name();
    const res = await post({ username, initialBalance: 5000 });
    expect(res.status).toBe(201);
    const created = (await res.json()) as User;
    expect(created).toEqual({
      id: expect.any(String),
      username,
      balance: 5000,
      createdAt: expect.any(String),
    });

    const [row] = await db.db.select().from(users).where(eq(users.id, created.id));
    expect(row).toMatchObject({ username, initialBalance: 5000, balance: 5000 });

    const read = await service.app.request(`/users/${created.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(created);
  });

  it("answers 409 for a taken username and keeps one row", async () => {
    const username = name();
    expect((await post({ username, initialBalance: 1 })).status).toBe(201);
    const again = await post({ username, initialBalance: 2 });
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: expect.stringContaining("taken") });
    expect(await db.db.select().from(users).where(eq(users.username, username))).toHaveLength(1);
  });

  it("answers 404 for an unknown id and 400 for a malformed one", async () => {
    const missing = await service.app.request(`/users/${randomUUID()}`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: "user not found" });
    const bad = await service.app.request("/users/42");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: expect.stringContaining("UUID") });
  });

  it.each([
    ["malformed JSON", '{"username": "x", ', 400],
    ["a missing username", { initialBalance: 1 }, 400],
    ["a missing balance", { username: "no-balance" }, 400],
    ["a blank username", { username: "  ", initialBalance: 1 }, 400],
    [
      "a username with a NUL (PostgreSQL text cannot hold it)",
      { username: "a\u0000b", initialBalance: 1 },
      400,
    ],
    ["a negative balance", { username: "neg", initialBalance: -1 }, 400],
    ["a fractional balance", { username: "frac", initialBalance: 1.5 }, 400],
    ["a balance as a string", { username: "str", initialBalance: "10" }, 400],
    [
      "a balance whose fraction a double drops",
      '{"username":"inexact","initialBalance":1000.0000000000000001}',
      400,
    ],
    ["an array", [], 400],
    ["a 2 MB body", { username: "big", initialBalance: 1, pad: "x".repeat(2 * 1024 * 1024) }, 413],
  ])("rejects %s with a JSON error and writes no row", async (_what, body, status) => {
    const before = await userCount();
    const res = await post(body);
    expect(res.status).toBe(status);
    expect(await res.json()).toEqual({ error: expect.any(String), requestId: expect.any(String) });
    expect(await userCount()).toBe(before);
  });
});

describe("Idempotency-Key on POST /users", () => {
  it("returns the first response to a retry and creates one user", async () => {
    const key = randomUUID();
    const body = { username: name(), initialBalance: 700 };
    const first = await post(body, { "idempotency-key": key });
    const retry = await post(
      { initialBalance: 700, username: ` ${body.username}` },
      { "idempotency-key": key },
    );
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    expect(await retry.text(), "the first answer, byte for byte").toBe(await first.text());
    expect(await db.db.select().from(users).where(eq(users.username, body.username))).toHaveLength(1);
    expect(await db.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key))).toHaveLength(1);
  });

  it("creates one user when retries race", async () => {
    const key = randomUUID();
    const body = { username: name(), initialBalance: 1 };
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => post(body, { "idempotency-key": key })),
    );
    const bodies = (await Promise.all(responses.map((r) => r.json()))) as User[];
    expect(responses.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    expect(new Set(bodies.map((b) => b.id)).size).toBe(1);
    expect(await db.db.select().from(users).where(eq(users.username, body.username))).toHaveLength(1);
  });

  it("answers 422 when the key comes back with a different body, and changes nothing", async () => {
    const key = randomUUID();
    const username = name();
    expect((await post({ username, initialBalance: 1 }, { "idempotency-key": key })).status).toBe(201);
    const before = await userCount();
    const other = await post({ username: name(), initialBalance: 1 }, { "idempotency-key": key });
    expect(other.status).toBe(422);
    expect(await other.json()).toMatchObject({ error: expect.stringContaining("Idempotency-Key") });
    expect(await userCount()).toBe(before);
  });

  it("keeps each subject's keys apart: another's key neither replays nor refuses its request", async () => {
    const key = randomUUID();
    const [alice, bob] = [`admin-${randomUUID()}`, `admin-${randomUUID()}`];
    const as = (subject: string) => ({ "idempotency-key": key, "x-auth-subject": subject });
    const body = { username: name(), initialBalance: 1 };
    const first = await post(body, as(alice));
    expect(first.status).toBe(201);
    // The same key and body from another subject is a request of its own: here a name already taken.
    const same = await post(body, as(bob));
    expect(same.status).toBe(409);
    // Another body from another subject is not a 422.
    const other = await post({ username: name(), initialBalance: 2 }, as(bob));
    expect(other.status).toBe(201);
    expect((await other.json()) as User).not.toEqual(await first.json());
    const rows = await db.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key));
    expect(rows.map((r) => r.subject).sort()).toEqual([alice, bob].sort());
    // Alice's retry still gets her own response.
    expect(await (await post(body, as(alice))).json()).toMatchObject({ username: body.username });
  });

  it("rejects an unusable key with 400", async () => {
    const before = await userCount();
    const res = await post({ username: name(), initialBalance: 1 }, { "idempotency-key": "x".repeat(201) });
    expect(res.status).toBe(400);
    expect(await userCount()).toBe(before);
  });

  it("stores nothing for a request that failed, so a retry fails the same way", async () => {
    const username = name();
    expect((await post({ username, initialBalance: 1 })).status).toBe(201);
    const key = randomUUID();
    expect((await post({ username, initialBalance: 1 }, { "idempotency-key": key })).status).toBe(409);
    expect((await post({ username, initialBalance: 1 }, { "idempotency-key": key })).status).toBe(409);
    expect(await db.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key))).toHaveLength(0);
  });
});

describe("the routes of the API document", () => {
  it("serves exactly its operations of the document, besides the probes and metrics", () => {
    const served = service.app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`);
    expect([...new Set(served)].sort()).toEqual(
      [
        ...USER_SERVICE_ROUTES.map((r) => `${r.method.toUpperCase()} ${honoPath(r.path)}`),
        "GET /health",
        "GET /ready",
        "GET /metrics",
      ].sort(),
    );
  });

  it("answers another method on a known path 405 with Allow, and writes nothing", async () => {
    const before = await userCount();
    const list = await service.app.request("/users");
    expect(list.status).toBe(405);
    expect(list.headers.get("allow")).toBe("POST");
    expect(await list.json()).toMatchObject({ error: "GET is not allowed on /users; allowed: POST" });
    const put = await service.app.request(`/users/${randomUUID()}`, {
      ...json({ username: name(), initialBalance: 1 }),
      method: "PUT",
    });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD");
    expect(await userCount()).toBe(before);
  });

  it("answers a body declared as something other than JSON 415, and writes nothing", async () => {
    const before = await userCount();
    const res = await service.app.request("/users", {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify({ username: name(), initialBalance: 1 }),
    });
    expect(res.status).toBe(415);
    expect(await res.json()).toMatchObject({ error: "Content-Type must be application/json" });
    expect(await userCount()).toBe(before);
  });
});

describe("operations endpoints", () => {
  it("is live, ready with its database and Kafka, and serves metrics", async () => {
    expect(await (await service.app.request("/health")).json()).toEqual({ status: "UP" });
    const ready = await service.app.request("/ready");
    expect(ready.status).toBe(200);
    const metrics = await (await service.app.request("/metrics")).text();
    expect(metrics).toContain("saga_dlq_events_total");
    expect(metrics).toContain("saga_reservations_total");
  });
});

describe("the debug line of a user created", () => {
  it("names the request's trace", async () => {
    const lines: Record<string, unknown>[] = [];
    const debug = await createUserService(testEnv(databaseUrl(), await freshTopicPrefix()), {
      logger: createLogger("user-service", "debug", {
        destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
      }),
    });
    onTestFinished(() => debug.stop());
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const res = await debug.app.request(
      "/users",
      json({ username: name(), initialBalance: 1 }, { traceparent }),
    );
    expect(res.status).toBe(201);
    expect(lines.filter((l) => l.msg === "user created").map((l) => l.traceId)).toEqual([
      "4bf92f3577b34da6a3ce929d0e0e4736",
    ]);
  });
});
