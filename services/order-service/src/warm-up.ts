import { randomUUID } from "node:crypto";
import { nextTraceparent } from "@saga/observability";
import type pg from "pg";
import { placeOrder, readOrder, readOrders } from "./domain/order-hot-path.ts";

/**
 * Before the service says it is ready: opens every connection of the pool and runs each statement of the
 * HTTP hot path once on each of them, in a transaction that is rolled back. A fresh process otherwise
 * pays for its first requests with connects, prepared statements parsed and planned per connection, and
 * cold code, in the very seconds a load balancer starts sending it traffic. Nothing is written: a rolled
 * back row never reaches the outbox's readers (the relay's replication slot decodes committed
 * transactions only).
 */
export async function prewarmHotPath(pool: pg.Pool): Promise<void> {
  const clients = await Promise.all(Array.from({ length: pool.options.max ?? 10 }, () => pool.connect()));
  try {
    await Promise.all(
      clients.map(async (client) => {
        await client.query("begin");
        try {
          const order = { userId: randomUUID(), amount: 1 };
          await placeOrder(client, order, nextTraceparent(undefined));
          await placeOrder(client, order, nextTraceparent(undefined), {
            subject: "warm-up",
            key: randomUUID(),
            fingerprint: "warm-up",
          });
          await readOrder(client, randomUUID());
          await readOrders(client, [randomUUID()]);
        } finally {
          await client.query("rollback");
        }
      }),
    );
  } finally {
    for (const client of clients) client.release();
  }
}
