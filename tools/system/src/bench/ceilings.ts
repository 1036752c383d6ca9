import { randomUUID } from "node:crypto";
import { postgresJsOptions, sessionParameters } from "@saga/db";
import { createKafka } from "@saga/kafka";
import { createTopics } from "@saga/tools/infra";
import postgres from "postgres";

export type KafkaCeiling = {
  messages: number;
  produceRowsPerS: number;
  consumeRowsPerS: number;
  batch: number;
};

/**
 * A raw produce-and-consume loop through the project's Kafka module (kafkajs underneath) with the
 * relay's batching: one batch in flight, acks=all, idempotent, keyed like an outbox row.
 */
export async function kafkaCeiling(
  brokers: string[],
  { messages = 50_000, batch = 500 } = {},
): Promise<KafkaCeiling> {
  const kafka = createKafka({ brokers, clientId: "bench-ceiling" });
  const topic = `bench-ceiling-${randomUUID()}`;
  await createTopics(brokers, [topic], 6);
  const producer = await kafka.createProducer();
  let consumed = 0;
  let consumedAll: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    consumedAll = resolve;
  });
  const consumer = await kafka.createConsumer({
    groupId: `bench-ceiling-${randomUUID()}`,
    topics: [topic],
    handle: async () => {
      if (++consumed === messages) consumedAll();
    },
    classify: () => "poison",
    deadLetter: async () => {},
  });
  try {
    const value = JSON.stringify({ orderId: randomUUID(), userId: randomUUID(), amount: 1000 });
    const started = performance.now();
    for (let sent = 0; sent < messages; sent += batch) {
      await producer.send(
        Array.from({ length: Math.min(batch, messages - sent) }, () => {
          const key = randomUUID();
          return {
            topic,
            key,
            value,
            headers: {
              "event-id": randomUUID(),
              "event-type": "OrderCreated",
              "schema-version": "1",
              "aggregate-id": key,
              "occurred-at": new Date().toISOString(),
            },
          };
        }),
      );
    }
    const produced = performance.now();
    await done;
    const finished = performance.now();
    return {
      messages,
      batch,
      produceRowsPerS: messages / ((produced - started) / 1000),
      consumeRowsPerS: messages / ((finished - started) / 1000),
    };
  } finally {
    await consumer.stop();
    await producer.close();
    await kafka.close();
  }
}

export type PostgresCeiling = { concurrency: number; commitsPerS: number };

/** Small write transactions per second (BEGIN; INSERT; COMMIT) through postgres.js at a fixed concurrency. */
export async function postgresCeiling(
  url: string,
  { concurrency = 32, seconds = 10 } = {},
): Promise<PostgresCeiling> {
  const sql = postgres({
    ...postgresJsOptions(url),
    max: concurrency,
    onnotice: () => {},
    connection: sessionParameters(),
  });
  try {
    await sql`create table if not exists bench_commits (id uuid primary key, amount bigint not null, at timestamptz not null default now())`;
    let commits = 0;
    const deadline = performance.now() + seconds * 1000;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < deadline) {
          await sql.begin(async (tx) => {
            await tx`insert into bench_commits (id, amount) values (${randomUUID()}, 1000)`;
          });
          commits++;
        }
      }),
    );
    return { concurrency, commitsPerS: commits / ((performance.now() - started) / 1000) };
  } finally {
    await sql`drop table if exists bench_commits`.catch(() => {});
    await sql.end();
  }
}
