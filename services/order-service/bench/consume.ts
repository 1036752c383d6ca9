/**
 * CPU the order-service spends per consumed `user.credit-reserved`, and PostgreSQL's backends with it, on
 * a backlog and on a trickle (`runConsumeBench` says how). Runs against the PostgreSQL and Kafka of
 * `tools/src/with-infra.ts`:
 *
 *   cd services/order-service && node ../../tools/src/with-infra.ts node bench/consume.ts [--events 3000]
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { type Order, TOPICS } from "@saga/contracts";
import { outboxMessage, outboxRow } from "@saga/messaging";
import { runConsumeBench } from "@saga/messaging/testing/consume-bench";
import { createLogger } from "@saga/observability";
import { createOrderService, parseOrderServiceEnv } from "../src/service.ts";

const { values } = parseArgs({ options: { events: { type: "string", default: "3000" } } });

await runConsumeBench({
  name: "order-service",
  events: Number(values.events),
  create: (env) => createOrderService(parseOrderServiceEnv(env), { logger: createLogger("bench", "warn") }),
  // A PENDING order for each event to confirm.
  async seed(service, count, prefix) {
    const orders: Order[] = [];
    for (let i = 0; i < count; i++) {
      const res = await service.app.request("/orders", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ userId: randomUUID(), amount: 1 + (i % 50) }),
      });
      orders.push((await res.json()) as Order);
    }
    return (i) => {
      const o = orders[i] as Order;
      const payload = { orderId: o.id, userId: o.userId, amount: o.amount };
      const row = outboxRow({ topic: TOPICS.creditReserved, aggregateId: o.id, payload });
      return outboxMessage({ ...row, headers: row.headers ?? {}, createdAt: new Date() }, prefix);
    };
  },
});
