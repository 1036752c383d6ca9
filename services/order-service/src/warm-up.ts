import { randomUUID } from "node:crypto";
import { countedOn, createHttpMetrics, nextTraceparent } from "@saga/observability";
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

/** Rounds of the HTTP path's warm-up run together. */
const AT_ONCE = 4;

/** What `prewarmHttpPath` sends through the app: a request path, its init and its env. */
type WarmUpApp = {
  request: (path: string, init: RequestInit, env: object) => Response | Promise<Response>;
};

/**
 * Before the service says it is ready, after `prewarmHotPath`: the HTTP path's own code (the server's
 * middleware, routing, validation, the reads' JavaScript, the JSON answers) run through the app, with no
 * socket, `rounds` times, so that V8 has compiled it before the first client's request; otherwise the first
 * seconds of traffic run interpreted while the load balancer already sends everything (the fresh start of
 * bench/JOURNAL.md shed POSTs and reads in its first seconds). Reads of an order and a user that have none,
 * and orders refused by validation: nothing is written and no saga begins. Their HTTP metrics are counted
 * on series of their own, thrown away with them: the app's are its clients' (a client's request served
 * meanwhile, in a test, is counted there as any other).
 */
export async function prewarmHttpPath(
  app: WarmUpApp,
  opts: {
    headers: Record<string, string>;
    rounds: number;
    /**
     * Whether `n` new orders at once would get past the saga backlog bound now: only then are they sent (to
     * be refused by validation), so that the warm-up never counts as a refusal of the bound.
     */
    admitsOrders: (n: number) => boolean;
  },
): Promise<void> {
  const { headers, rounds } = opts;
  const env = countedOn(createHttpMetrics());
  const one = async () => {
    const id = randomUUID();
    await Promise.all([
      app.request(`/orders/${id}`, { headers }, env),
      app.request(`/orders?userId=${id}`, { headers }, env),
      opts.admitsOrders(AT_ONCE) &&
        app.request(
          "/orders",
          {
            method: "POST",
            headers: { ...headers, "content-type": "application/json" },
            // Refused by validation (an amount must be positive), after the body is read and parsed.
            body: JSON.stringify({ userId: id, amount: -1 }),
          },
          env,
        ),
    ]);
  };
  // A few at a time: well within the admission lanes, which must not shed the warm-up.
  for (let i = 0; i < rounds; i += AT_ONCE) await Promise.all(Array.from({ length: AT_ONCE }, one));
}
