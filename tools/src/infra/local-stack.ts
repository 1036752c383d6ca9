import { join } from "node:path";
import { createDatabase, createTopics } from "./admin.ts";
import { type KafkaServer, type Log, startKafka } from "./kafka.ts";
import { cacheDir } from "./paths.ts";
import { isPortFree } from "./ports.ts";
import { type PostgresServer, startPostgres } from "./postgres.ts";

export interface LocalStackOptions {
  postgresPort?: number;
  kafkaPort?: number;
  kafkaControllerPort?: number;
  /** Kept across runs; defaults to `.cache/data`. */
  dataDir?: string;
  databases?: readonly string[];
  topics?: readonly string[];
  partitions?: number;
  log?: Log;
}

export interface LocalStack {
  /** Superuser URL of the server's `postgres` database. */
  readonly postgresUrl: string;
  /** URL of each database in `databases`. */
  readonly databaseUrls: Record<string, string>;
  readonly kafkaBrokers: string[];
  stop(): Promise<void>;
}

/**
 * The durable PostgreSQL and Kafka that `npm run infra` and `npm start` run on fixed ports,
 * with their databases and topics created if missing. Data survives restarts.
 */
export async function startLocalStack(opts: LocalStackOptions = {}): Promise<LocalStack> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const dataDir = opts.dataDir ?? join(cacheDir, "data");
  const postgresPort = opts.postgresPort ?? 5432;
  const kafkaPort = opts.kafkaPort ?? 9092;
  const kafkaControllerPort = opts.kafkaControllerPort ?? kafkaPort + 1;
  for (const [what, port] of [
    ["PostgreSQL", postgresPort],
    ["Kafka", kafkaPort],
    ["the Kafka controller", kafkaControllerPort],
  ] as const) {
    if (!(await isPortFree(port)))
      throw new Error(`port ${port} for ${what} is taken: is the stack already running?`);
  }

  const started = performance.now();
  const results = await Promise.allSettled([
    startPostgres({
      dataDir: join(dataDir, "postgres"),
      port: postgresPort,
      logFile: join(dataDir, "postgres.log"),
      log,
    }),
    startKafka({
      dataDir: join(dataDir, "kafka"),
      port: kafkaPort,
      controllerPort: kafkaControllerPort,
      logFile: join(dataDir, "kafka.log"),
      log,
    }),
  ]);
  const [pg, kafka] = results;
  const stop = async () => {
    await Promise.all(results.map((r) => (r.status === "fulfilled" ? r.value.stop() : undefined)));
  };
  if (pg.status === "rejected" || kafka.status === "rejected") {
    await stop();
    throw pg.status === "rejected" ? pg.reason : (kafka as PromiseRejectedResult).reason;
  }
  const postgres: PostgresServer = pg.value;
  const broker: KafkaServer = kafka.value;
  try {
    const databaseUrls: Record<string, string> = {};
    for (const name of opts.databases ?? []) databaseUrls[name] = await createDatabase(postgres.url, name);
    if (opts.topics?.length) await createTopics(broker.brokers, opts.topics, opts.partitions ?? 6);
    log(
      `infra: PostgreSQL ${postgres.version} and Kafka ${broker.version} ready in ${((performance.now() - started) / 1000).toFixed(1)}s (data in ${dataDir})`,
    );
    return { postgresUrl: postgres.url, databaseUrls, kafkaBrokers: broker.brokers, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
