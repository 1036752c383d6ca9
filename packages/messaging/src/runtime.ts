import type { KafkaClient, KafkaLogger } from "@saga/kafka";
import type { Logger } from "@saga/observability";
import { sql } from "drizzle-orm";
import type { Executor } from "./db.ts";

/** Routes the Kafka client's log lines into the process's JSON log. */
export function kafkaLogger(logger: Logger): KafkaLogger {
  return (level, message, extra) => logger[level](extra, message);
}

/** Rejects when `promise` has not settled within `ms`; the work itself is not cancelled. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Readiness of a saga service: its database and a Kafka broker answer. Bounded in time, because both
 * clients retry for ever while their server is down and a probe must answer.
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
      withTimeout(db.execute(sql`select 1`), timeoutMs, "database"),
      withTimeout(kafka.ping(), timeoutMs, "kafka"),
    ]);
  };
}
