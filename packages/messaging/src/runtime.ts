import type { KafkaClient } from "@saga/kafka";
import { withTimeout } from "@saga/runtime";
import { sql } from "drizzle-orm";
import type { Executor } from "./db.ts";

/**
 * Readiness of a saga service: its database and a Kafka broker answer. Bounded in time, because both
 * clients retry while their server is down and a probe must answer; the Kafka probe is abandoned when
 * its time is up, the query is bounded by the pool's client-side timeout.
 */
export function readiness({
  db,
  kafka,
  timeoutMs = 2000,
}: {
  db: Executor;
  kafka: KafkaClient;
  timeoutMs?: number;
}) {
  return async () => {
    await Promise.all([
      withTimeout(() => db.execute(sql`select 1`), timeoutMs, "database"),
      withTimeout((signal) => kafka.ping(signal), timeoutMs, "kafka"),
    ]);
  };
}
