import type { KafkaClient } from "@saga/kafka";
import type postgres from "postgres";
import { CONSUMERS } from "../chaos/checker.ts";

/** Messages the services' consumer groups have not committed yet, over all their partitions. */
export async function totalConsumerLag(kafka: KafkaClient): Promise<number> {
  let lag = 0;
  for (const { group, topics } of CONSUMERS) {
    for (const p of await kafka.consumerLag(group, [...topics])) lag += p.lag;
  }
  return lag;
}

/**
 * Waits until the system has nothing in flight: no PENDING order, no unpublished outbox row, no
 * consumer lag, twice in a row half a second apart. Says what is left every five seconds. Resolves
 * false when `timeoutS` passes first.
 */
export async function waitQuiet({
  userDb,
  orderDb,
  kafka,
  timeoutS,
  log,
}: {
  userDb: postgres.Sql;
  orderDb: postgres.Sql;
  kafka: KafkaClient;
  timeoutS: number;
  log: (line: string) => void;
}): Promise<boolean> {
  const deadline = Date.now() + timeoutS * 1000;
  let calm = 0;
  let lastLog = 0;
  while (Date.now() < deadline) {
    let left: string;
    try {
      const [[pending], [userBacklog], [orderBacklog]] = await Promise.all([
        orderDb<{ n: number }[]>`select count(*)::int as n from orders where status = 'PENDING'`,
        userDb<{ n: number }[]>`select count(*)::int as n from outbox where published_at is null`,
        orderDb<{ n: number }[]>`select count(*)::int as n from outbox where published_at is null`,
      ]);
      const lag = await totalConsumerLag(kafka);
      const busy = (pending?.n ?? 0) + (userBacklog?.n ?? 0) + (orderBacklog?.n ?? 0) + lag;
      calm = busy === 0 ? calm + 1 : 0;
      if (calm >= 2) return true;
      left = `${pending?.n} pending orders, outbox backlog ${userBacklog?.n}+${orderBacklog?.n}, consumer lag ${lag}`;
    } catch (err) {
      calm = 0;
      left = (err as Error).message;
    }
    if (calm === 0 && Date.now() - lastLog >= 5000) {
      lastLog = Date.now();
      log(`settling: ${left}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}
