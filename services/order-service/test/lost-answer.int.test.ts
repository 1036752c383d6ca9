import { randomUUID } from "node:crypto";
import type { Order } from "@saga/contracts";
import { idempotencyKeys, orders, outbox } from "@saga/db/order";
import { type FaultProxy, proxiedUrl } from "@saga/tools/fault-proxy";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

// The order-service reaches its database through a fault proxy; the test reads the database directly.
const databaseUrl = useFreshDatabase("order_lost_answer");
let proxy: FaultProxy;
let service: OrderService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  const link = await proxiedUrl(databaseUrl(), "order-service→postgres");
  proxy = link.proxy;
  service = await startInProcess(testEnv(link.url, await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  proxy?.heal();
  await service?.stop();
  await proxy?.close();
  await db?.close();
});

const post = (body: unknown, key: string) =>
  service.app.request("/orders", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify(body),
  });

/** Resolves once `found` answers true, asked every 10 ms. */
async function until(found: () => Promise<boolean>) {
  while (!(await found())) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe("the database connection lost while a request is in flight", () => {
  it("answers a POST /orders that committed but whose answer was lost as may have been applied, and its retry with the same key replays the order", async () => {
    onTestFinished(() => proxy.heal());
    const key = randomUUID();
    const body = { userId: randomUUID(), amount: 42 };
    // Every answer of PostgreSQL takes half a second to come back: the order commits, and its answer is on its
    // way when the link is reset, as when the server or the network goes away at that moment.
    proxy.inject({ kind: "latency", ms: 500 });
    const answer = post(body, key);
    await until(
      async () => (await db.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key))).length > 0,
    );
    proxy.inject({ kind: "reset" });
    const res = await answer;

    expect(res.status, "a write whose outcome is unknown is not a 503, which says nothing changed").toBe(502);
    expect(res.headers.get("retry-after")).toBeNull();
    expect(((await res.json()) as { error: string }).error).toBe(
      "the database connection was lost before it answered: the request may have been applied (send it again with the same Idempotency-Key)",
    );
    const placed = await db.db.select().from(orders).where(eq(orders.userId, body.userId));
    expect(placed, "the order committed").toHaveLength(1);

    proxy.heal();
    const retry = await post(body, key);
    expect(retry.status).toBe(201);
    expect(((await retry.json()) as Order).id, "the order placed the first time").toBe(placed[0]?.id);
    expect(await db.db.select().from(orders).where(eq(orders.userId, body.userId))).toHaveLength(1);
    expect(
      await db.db
        .select()
        .from(outbox)
        .where(eq(outbox.aggregateId, placed[0]?.id ?? "")),
    ).toHaveLength(1);
  });

  it("answers a read whose connection is lost 503: it changed nothing", async () => {
    onTestFinished(() => proxy.heal());
    proxy.heal();
    const created = await post({ userId: randomUUID(), amount: 7 }, randomUUID());
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as Order;
    proxy.inject({ kind: "latency", ms: 500 });
    const answer = service.app.request(`/orders/${id}`);
    // The read is on its way to the server when the link is reset (had it not left yet, its connect
    // would fail instead: a 503 too).
    await new Promise((resolve) => setTimeout(resolve, 200));
    proxy.inject({ kind: "reset" });
    const res = await answer;
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: "the database is unavailable; retry later" });
  });
});
