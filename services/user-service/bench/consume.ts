/**
 * CPU a user-service spends per consumed `order.created`, and PostgreSQL's backends with it, on a
 * backlog and on a trickle (`runConsumeBench` says how). Runs against the PostgreSQL and Kafka of
 * `tools/src/with-infra.ts`:
 *
 *   cd services/user-service && node ../../tools/src/with-infra.ts node bench/consume.ts [--events 3000]
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { TOPICS, type User } from "@saga/contracts";
import { outboxMessage, outboxRow } from "@saga/messaging";
import { runConsumeBench } from "@saga/messaging/testing/consume-bench";
import { createLogger } from "@saga/observability";
import { createUserService, parseUserServiceEnv } from "../src/service.ts";

const { values } = parseArgs({ options: { events: { type: "string", default: "3000" } } });

await runConsumeBench({
  name: "user-service",
  events: Number(values.events),
  create: (env) => createUserService(parseUserServiceEnv(env), { logger: createLogger("bench", "warn") }),
  // 200 users rich enough for every order; each event a new order of one of them.
  async seed(service, _count, prefix) {
    const users: string[] = [];
    for (let i = 0; i < 200; i++) {
      const res = await service.app.request("/users", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: 1_000_000_000 }),
      });
      users.push(((await res.json()) as User).id);
    }
    return (i) => {
      const orderId = randomUUID();
      const payload = { orderId, userId: users[i % users.length] as string, amount: 1 + (i % 50) };
      const row = outboxRow({ topic: TOPICS.orderCreated, aggregateId: orderId, payload });
      return outboxMessage({ ...row, headers: row.headers ?? {}, createdAt: new Date() }, prefix);
    };
  },
});
