/**
 * `GET /orders/:id` with `Prefer: wait=N` on two order-service instances of one database: A consumes
 * the saga's events, B only serves HTTP, as a second instance behind the gateway would. A user-service
 * and a stand-in relay complete the saga over the real broker.
 */
import { randomUUID } from "node:crypto";
import type { Order, User } from "@saga/contracts";
import { createPgDatabase, userSchema } from "@saga/db";
import { createKafka, type KafkaClient } from "@saga/kafka";
import { type OutboxPublisher, startOutboxPublisher } from "@saga/messaging/testing";
import { createLogger } from "@saga/observability";
import { proxiedUrl } from "@saga/tools/fault-proxy";
import { kafkaBrokers, useFreshDatabase } from "@saga/tools/test/harness";
import { createUserService, type UserService } from "@saga/user-service";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const orderDatabaseUrl = useFreshDatabase("wait_order");
const userDatabaseUrl = useFreshDatabase("wait_user");
let prefix: string;
let a: OrderService;
let b: OrderService;
let userService: UserService;
let orderDb: ReturnType<typeof openDatabase>;
let userDb: ReturnType<typeof createPgDatabase<typeof userSchema>>;
let kafka: KafkaClient;
let publisher: OutboxPublisher | undefined;

beforeAll(async () => {
  prefix = await freshTopicPrefix();
  a = await startInProcess({ ...testEnv(orderDatabaseUrl(), prefix), INSTANCE_ID: "a" });
  b = await startInProcess({ ...testEnv(orderDatabaseUrl(), prefix), INSTANCE_ID: "b" });
  userService = await createUserService(
    { ...testEnv(userDatabaseUrl(), prefix), CONSUMER_GROUP: `${prefix}user-service` },
    {
      logger: createLogger("user-service", process.env.TEST_LOG_LEVEL ?? "error"),
    },
  );
  await Promise.all([a.start(), userService.start()]);
  orderDb = openDatabase(orderDatabaseUrl());
  userDb = createPgDatabase(userDatabaseUrl(), userSchema, { max: 3 });
  kafka = createKafka({ brokers: kafkaBrokers(), clientId: "wait-test" });
});

afterAll(async () => {
  await publisher?.stop();
  await kafka?.close();
  await Promise.all([a?.stop(), b?.stop(), userService?.stop()]);
  await Promise.all([orderDb?.close(), userDb?.close()]);
});

const getOrder = (service: OrderService, id: string, prefer?: string) =>
  service.app.request(`/orders/${id}`, { headers: prefer ? { prefer } : {} });

/** The requests an instance's read and long-poll lanes hold now. */
async function inFlight(service: OrderService) {
  const text = await (await service.app.request("/metrics")).text();
  const lane = (name: string) =>
    Number(new RegExp(`http_admission_in_flight\\{lane="${name}",[^}]*\\} (\\d+)`).exec(text)?.[1] ?? 0);
  return { read: lane("read"), wait: lane("wait") };
}

/** A PENDING order written straight to the table, with no event: only the test decides it. */
async function pendingOrder(userId = randomUUID()): Promise<string> {
  const id = randomUUID();
  await orderDb.pool.query("insert into orders (id, user_id, amount, status) values ($1, $2, 7, 'PENDING')", [
    id,
    userId,
  ]);
  return id;
}

async function placeOrder(userId: string, amount: number): Promise<Order> {
  const res = await a.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId, amount }),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as Order;
}

describe("GET /orders/:id with Prefer: wait", () => {
  it("answers as soon as the saga decides the order, on an instance that did not apply the event", async () => {
    const created = await userService.app.request("/users", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: `wait-${randomUUID()}`, initialBalance: 5000 }),
    });
    const userId = ((await created.json()) as User).id;
    const paid = await placeOrder(userId, 1000);
    const unpaid = await placeOrder(userId, 9000);
    // Both held on B while nothing has been published yet, so both are PENDING when the wait begins.
    const answers = Promise.all([
      getOrder(b, paid.id, "wait=25"),
      getOrder(b, unpaid.id, "respond-async, wait=25"),
    ]);
    await vi.waitFor(() => expect(b.waits.waiting()).toBe(2), { timeout: 5000, interval: 20 });

    publisher = await startOutboxPublisher({
      kafka,
      topicPrefix: prefix,
      databases: [orderDb.db, userDb.db],
    });
    const [confirmed, canceled] = await answers;
    expect(confirmed.status).toBe(200);
    expect(confirmed.headers.get("preference-applied")).toBe("wait=25");
    expect(await confirmed.json()).toEqual({ ...paid, status: "CONFIRMED" });
    expect(await canceled.json()).toEqual({ ...unpaid, status: "CANCELED" });
    // What the waiters were told is what the database holds.
    expect(await (await getOrder(a, paid.id)).json()).toEqual({ ...paid, status: "CONFIRMED" });
    expect(b.waits.waiting()).toBe(0);
  });

  it("answers with the PENDING order after N seconds when nothing decides it", async () => {
    const id = await pendingOrder();
    const answer = getOrder(a, id, "wait=1");
    // Held in the long polls' lane once read, not in the reads' bound.
    await vi.waitFor(async () => expect(await inFlight(a)).toEqual({ read: 0, wait: 1 }), {
      timeout: 5000,
      interval: 20,
    });
    expect(a.waits.waiting()).toBe(1);
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.headers.get("preference-applied")).toBe("wait=1");
    expect(await res.json()).toMatchObject({ id, status: "PENDING" });
    expect(a.waits.waiting()).toBe(0);
  });

  it("times a held read apart from the request latency, a plain read in it", async () => {
    const counts = async () => {
      const text = await (await a.app.request("/metrics")).text();
      const count = (histogram: string) =>
        Number(
          new RegExp(
            `${histogram}_count\\{[^}]*method="GET",route="/orders/:id",status="200"[^}]*\\} (\\d+)`,
          ).exec(text)?.[1] ?? 0,
        );
      return {
        latency: count("http_request_duration_seconds"),
        held: count("http_held_request_duration_seconds"),
      };
    };
    const id = await pendingOrder();
    const before = await counts();
    // Held for its second, as long as a saga that takes that long: not how long the service took to answer.
    const held = await getOrder(a, id, "wait=1");
    expect(held.headers.get("preference-applied")).toBe("wait=1");
    expect(await held.json()).toMatchObject({ id, status: "PENDING" });
    const plain = await getOrder(a, id);
    expect(await plain.json()).toMatchObject({ id, status: "PENDING" });
    expect(await counts()).toEqual({ latency: before.latency + 1, held: before.held + 1 });
  });

  it("wakes every waiter on every instance when one UPDATE decides several orders, or a DELETE on another instance", async () => {
    const ids = [await pendingOrder(), await pendingOrder(), await pendingOrder()];
    const deleted = await pendingOrder();
    const answers = Promise.all([
      getOrder(a, ids[0] as string, "wait=25"),
      getOrder(b, ids[0] as string, "wait=25"),
      getOrder(a, ids[1] as string, "wait=25"),
      getOrder(b, ids[2] as string, "wait=25"),
      getOrder(a, deleted, "wait=25"),
    ]);
    await vi.waitFor(() => expect(a.waits.waiting() + b.waits.waiting()).toBe(5), {
      timeout: 5000,
      interval: 20,
    });
    // As a consumer's batch on any instance would: one statement, one transaction.
    await orderDb.pool.query(
      "update orders set status = 'CONFIRMED', updated_at = now() where id = any($1::uuid[])",
      [ids],
    );
    expect((await b.app.request(`/orders/${deleted}`, { method: "DELETE" })).status).toBe(204);
    const bodies = (await Promise.all((await answers).map((r) => r.json()))) as Order[];
    expect(bodies.map((o) => [o.id, o.status])).toEqual([
      [ids[0], "CONFIRMED"],
      [ids[0], "CONFIRMED"],
      [ids[1], "CONFIRMED"],
      [ids[2], "CONFIRMED"],
      [deleted, "CANCELED"],
    ]);
  });

  it("holds a user's wait on its own order only: another's is a 404 at once, so its timing says nothing", async () => {
    // Were another user's order held until the saga decided, its 404 would come late, and a user could
    // tell someone else's pending order from an id that does not exist.
    const owner = randomUUID();
    const id = await pendingOrder(owner);
    const asUser = (subject: string) => ({
      prefer: "wait=30",
      "x-auth-subject": subject,
      "x-auth-role": "user",
    });
    const other = await a.app.request(`/orders/${id}`, { headers: asUser(randomUUID()) });
    expect(other.status).toBe(404);
    expect(other.headers.get("preference-applied"), "not held").toBeNull();
    expect(await other.json()).toMatchObject({ error: "order not found" });

    const own = a.app.request(`/orders/${id}`, { headers: asUser(owner) });
    await vi.waitFor(() => expect(a.waits.waiting()).toBe(1), { timeout: 5000, interval: 20 });
    await orderDb.pool.query("update orders set status = 'CONFIRMED', updated_at = now() where id = $1", [
      id,
    ]);
    const answered = await own;
    expect(answered.headers.get("preference-applied")).toBe("wait=30");
    expect(await answered.json()).toMatchObject({ id, status: "CONFIRMED" });
  });

  it("clamps a wait above 30 s, answers a decided or unknown order at once, and ignores a bad value", async () => {
    const id = await pendingOrder();
    await orderDb.pool.query("update orders set status = 'CONFIRMED' where id = $1", [id]);
    const decided = await getOrder(a, id, "wait=120");
    expect(decided.headers.get("preference-applied")).toBe("wait=30");
    expect(await decided.json()).toMatchObject({ id, status: "CONFIRMED" });

    const unknown = await getOrder(a, randomUUID(), "wait=5");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: "order not found" });

    const plain = await getOrder(a, id, "wait=soon");
    expect(plain.status).toBe(200);
    expect(plain.headers.get("preference-applied")).toBeNull();
    // A cache must not answer a waiting request with a plain one's response, or the reverse.
    expect(plain.headers.get("vary")).toBe("prefer");
    expect(decided.headers.get("vary")).toBe("prefer");
    expect(a.waits.waiting()).toBe(0);
  });

  it("reads in the read lane's bound: a long poll answered at once is shed as a read is, and only a held one leaves it", async () => {
    // Two reads at once and no queue, so that a burst of them is past the bound before any is answered.
    const d = await startInProcess({
      ...testEnv(orderDatabaseUrl(), prefix, {
        ADMISSION_READ_IN_FLIGHT: 2,
        ADMISSION_QUEUE: 0,
        ADMISSION_WARMUP_MS: 0,
      }),
      INSTANCE_ID: "d",
    });
    onTestFinished(() => d.stop());
    const pending = await pendingOrder();
    const decided = await pendingOrder();
    await orderDb.pool.query("update orders set status = 'CONFIRMED' where id = $1", [decided]);

    // Three held on the PENDING order, more than the read bound: holding, they take no read's place.
    const held: (Response | Promise<Response>)[] = [];
    for (let n = 1; n <= 3; n++) {
      held.push(getOrder(d, pending, "wait=25"));
      await vi.waitFor(async () => expect(await inFlight(d)).toEqual({ read: 0, wait: n }), {
        timeout: 5000,
        interval: 20,
      });
    }

    // Long polls of a decided or an unknown order are answered at once, from a read: past the read bound
    // they are shed as plain reads are, 503 with Retry-After, and no more than the bound reach the database.
    const burst = await Promise.all(
      Array.from({ length: 10 }, (_, n) => getOrder(d, n % 2 ? decided : randomUUID(), "wait=25")),
    );
    const answered = burst.filter((r) => r.status !== 503);
    const shed = burst.filter((r) => r.status === 503);
    expect(answered.map((r) => r.status).sort()).toEqual([200, 404]);
    expect(shed).toHaveLength(8);
    for (const res of shed) {
      expect(res.headers.get("retry-after")).toBe("1");
      expect(await res.json()).toMatchObject({
        error: "overloaded: too many requests in flight; retry later",
      });
    }

    // The held ones are still held, and answered when the order is decided.
    expect(d.waits.waiting()).toBe(3);
    await orderDb.pool.query("update orders set status = 'CANCELED', updated_at = now() where id = $1", [
      pending,
    ]);
    for (const res of await Promise.all(held)) {
      expect(res.status).toBe(200);
      expect(res.headers.get("preference-applied")).toBe("wait=25");
      expect(await res.json()).toMatchObject({ id: pending, status: "CANCELED" });
    }
  });

  it("hears decisions again within a second or two of a long database outage, not up to 20 s later", async () => {
    // Instance c reaches PostgreSQL through a link that resets every connection for 12 s: by then its
    // client has failed to restore the LISTEN connection a handful of times, and without a cap on the
    // wait between attempts the next would come 7 s or more after the link is back.
    const { proxy: link, url: viaLink } = await proxiedUrl(orderDatabaseUrl(), "c→postgres");
    onTestFinished(() => link.close());
    const c = await startInProcess({ ...testEnv(viaLink, prefix), INSTANCE_ID: "c" });
    onTestFinished(() => c.stop());
    const id = await pendingOrder();
    link.inject({ kind: "reset" });
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    link.heal();
    // Held on c once it can read again (its pool reconnects at once), then canceled on a.
    const answer = getOrder(c, id, "wait=6");
    // Held once read: a waiter counts from before its read, so `waiting()` alone would not say so.
    await vi.waitFor(async () => expect(await inFlight(c)).toEqual({ read: 0, wait: 1 }), {
      timeout: 5000,
      interval: 20,
    });
    expect((await a.app.request(`/orders/${id}`, { method: "DELETE" })).status).toBe(204);
    const res = await answer;
    expect(res.headers.get("preference-applied")).toBe("wait=6");
    expect(await res.json()).toMatchObject({ id, status: "CANCELED" });
  }, 40_000);

  it("answers held requests with the PENDING order when the instance shuts down", async () => {
    const c = await startInProcess({ ...testEnv(orderDatabaseUrl(), prefix), INSTANCE_ID: "c" });
    const id = await pendingOrder();
    const answer = getOrder(c, id, "wait=25");
    await vi.waitFor(() => expect(c.waits.waiting()).toBe(1), { timeout: 5000, interval: 20 });
    c.waits.release();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, status: "PENDING" });
    await c.stop();
  });
});
