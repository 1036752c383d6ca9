import { randomUUID } from "node:crypto";
import type { Order } from "@saga/contracts";
import { setForeignDateStyle, useFreshDatabase } from "@saga/tools/test/harness";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_dates");
let service: OrderService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  await setForeignDateStyle(databaseUrl());
  service = await startInProcess(testEnv(databaseUrl(), await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  await service?.stop();
  await db?.close();
});

/** A user's orders' created_at as stored, in UTC to the millisecond (the API's form), oldest first. */
async function storedCreatedAts(userId: string): Promise<{ id: string; createdAt: string }[]> {
  const { rows } = await db.pool.query<{ id: string; createdAt: string }>(
    `select id::text as id, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "createdAt"
     from orders where user_id = $1 order by created_at, id`,
    [userId],
  );
  return rows;
}

describe("on a database whose DateStyle is 'SQL, DMY' and TimeZone Europe/Berlin", () => {
  it("GET /orders?userId= lists an order with the createdAt POST /orders answered and stored", async () => {
    const userId = randomUUID();
    const res = await service.app.request("/orders", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId, amount: 100 }),
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as Order;
    expect(await storedCreatedAts(userId)).toEqual([{ id: created.id, createdAt: created.createdAt }]);

    const list = await service.app.request(`/orders?userId=${userId}`);
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual([created]);
  });

  it("GET /orders?userId= and GET /orders/:id read orders of 5 and 6 December as such", async () => {
    const userId = randomUUID();
    const { rows } = await db.pool.query<{ id: string }>(
      `insert into orders (user_id, amount, status, created_at, updated_at)
       values ($1, 1, 'CONFIRMED', '2026-12-05 10:00:00.123+00', '2026-12-05 10:00:00.123+00'),
              ($1, 2, 'CONFIRMED', '2026-12-06 23:30:00.456+00', '2026-12-06 23:30:00.456+00')
       returning id::text as id`,
      [userId],
    );
    const [first, second] = rows.map((r) => r.id);
    const expected = [
      { id: first, userId, amount: 1, status: "CONFIRMED", createdAt: "2026-12-05T10:00:00.123Z" },
      { id: second, userId, amount: 2, status: "CONFIRMED", createdAt: "2026-12-06T23:30:00.456Z" },
    ];
    expect(await storedCreatedAts(userId)).toEqual(expected.map(({ id, createdAt }) => ({ id, createdAt })));

    const list = await service.app.request(`/orders?userId=${userId}`);
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual(expected);
    const one = await service.app.request(`/orders/${first}`);
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual(expected[0]);
  });
});
