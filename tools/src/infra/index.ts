import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import {
  type KafkaServer,
  kafkaImageEnvironment,
  type Log,
  SINGLE_NODE_SETTINGS,
  startKafka,
} from "./kafka.ts";
import { cacheDir } from "./paths.ts";
import { freePort } from "./ports.ts";
import { type PostgresServer, REPLICATION_SETTINGS, removeDataDir, startPostgres } from "./postgres.ts";

export { createDatabase, createTopics, dropDatabase, setDatabaseDefaults } from "./admin.ts";
export { createTestCertificates, type TestCertificates } from "./certificates.ts";
export { haproxyTool, nginxTool, type Tool } from "./debian-tools.ts";
export {
  KAFKA_VERSION,
  type KafkaServer,
  kafkaImageEnvironment,
  type Log,
  prepareKafka,
  type SecureListener,
  SINGLE_NODE_SETTINGS,
  startKafka,
} from "./kafka.ts";
export { type LocalStack, startLocalStack } from "./local-stack.ts";
export { cacheDir, repoRoot } from "./paths.ts";
export { freePort, isPortFree } from "./ports.ts";
export { type PostgresServer, REPLICATION_SETTINGS, startPostgres } from "./postgres.ts";
export { type Supervised, type SuperviseOptions, supervise } from "./supervise.ts";

export interface Infra {
  /** A URL with the right to CREATE DATABASE (its own database is not for tests to use). */
  readonly postgresUrl: string;
  readonly kafkaBrokers: string[];
  /** How the servers were provided. */
  readonly kind: InfraKind;
  stop(): Promise<void>;
}

export type InfraKind = "external" | "docker" | "local";

export interface InfraOptions {
  /** Read for POSTGRES_URL, KAFKA_BROKERS (comma-separated) and SAGA_INFRA (forces a kind). */
  env?: NodeJS.ProcessEnv;
  log?: Log;
}

/**
 * PostgreSQL and Kafka for tests, from the first source that is available:
 * 1. external servers named by POSTGRES_URL and KAFKA_BROKERS (nothing is started),
 * 2. containers, when a Docker engine answers,
 * 3. local processes on free ports, with data under `.cache/run/` that is deleted on stop.
 */
export async function startInfra(opts: InfraOptions = {}): Promise<Infra> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((line: string) => console.log(line));
  const kind = chooseKind(env);
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);

  if (kind === "external") {
    const infra = externalInfra(env);
    log(`infra: using external servers (POSTGRES_URL, KAFKA_BROKERS=${infra.kafkaBrokers.join(",")})`);
    return infra;
  }
  if (kind === "docker") {
    log("infra: a Docker engine answers; starting PostgreSQL and Kafka containers");
    const infra = await dockerInfra();
    log(`infra: containers ready in ${seconds()}s: ${infra.postgresUrl} ${infra.kafkaBrokers.join(",")}`);
    return infra;
  }
  log("infra: no POSTGRES_URL/KAFKA_BROKERS and no Docker engine; starting local PostgreSQL and Kafka");
  const infra = await localInfra(log);
  log(`infra: ready in ${seconds()}s: ${infra.postgresUrl} ${infra.kafkaBrokers.join(",")}`);
  return infra;
}

function chooseKind(env: NodeJS.ProcessEnv): InfraKind {
  const forced = env.SAGA_INFRA;
  if (forced === "external" || forced === "docker" || forced === "local") return forced;
  if (forced) throw new Error(`SAGA_INFRA must be external, docker or local, not ${JSON.stringify(forced)}`);
  if (env.POSTGRES_URL && env.KAFKA_BROKERS) return "external";
  return dockerAnswers() ? "docker" : "local";
}

function dockerAnswers(): boolean {
  const info = spawnSync("docker", ["info"], { stdio: "ignore", timeout: 10_000 });
  return info.status === 0;
}

function externalInfra(env: NodeJS.ProcessEnv): Infra {
  const postgresUrl = env.POSTGRES_URL;
  const kafkaBrokers = (env.KAFKA_BROKERS ?? "")
    .split(",")
    .map((b) => b.trim())
    .filter(Boolean);
  if (!postgresUrl || kafkaBrokers.length === 0)
    throw new Error("external infra needs both POSTGRES_URL and KAFKA_BROKERS");
  return { postgresUrl, kafkaBrokers, kind: "external", stop: async () => {} };
}

/**
 * The images of the Docker test infra. PostgreSQL is compose.yaml's (compose.test.ts checks). Kafka is not
 * compose's apache/kafka:4.4.0: testcontainers' KafkaContainer runs Confluent's start script and reads the
 * tag as a Confluent Platform version. Confluent Platform 8.0 is Apache Kafka 4.0, in KRaft mode.
 */
export const DOCKER_IMAGES = {
  postgres: "postgres:18.4-alpine",
  kafka: "confluentinc/cp-kafka:8.0.0",
} as const;

// Loaded only when Docker is there: testcontainers is heavy to import.
async function dockerInfra(): Promise<Infra> {
  const [{ PostgreSqlContainer }, { KafkaContainer }] = await Promise.all([
    import("@testcontainers/postgresql"),
    import("@testcontainers/kafka"),
  ]);
  const postgresSettings = {
    max_connections: 400,
    ...REPLICATION_SETTINGS,
    fsync: "off",
    synchronous_commit: "off",
  };
  const [postgres, kafka] = await Promise.all([
    new PostgreSqlContainer(DOCKER_IMAGES.postgres)
      .withCommand(["postgres", ...Object.entries(postgresSettings).flatMap(([k, v]) => ["-c", `${k}=${v}`])])
      .start(),
    new KafkaContainer(DOCKER_IMAGES.kafka)
      .withEnvironment(kafkaImageEnvironment({ "num.partitions": 6, ...SINGLE_NODE_SETTINGS }))
      .start(),
  ]);
  return {
    postgresUrl: postgres.getConnectionUri(),
    kafkaBrokers: [`${kafka.getHost()}:${kafka.getMappedPort(9093)}`],
    kind: "docker",
    async stop() {
      await Promise.all([postgres.stop(), kafka.stop()]);
    },
  };
}

async function localInfra(log: Log): Promise<Infra> {
  const runs = join(cacheDir, "run");
  await removeAbandonedRuns(runs);
  const runDir = join(runs, `${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(runDir, { recursive: true });

  let postgres: PostgresServer | undefined;
  let kafka: KafkaServer | undefined;
  const stop = async () => {
    await Promise.all([postgres?.stop(), kafka?.stop()]);
    await removeDataDir(join(runDir, "postgres"));
    await rm(runDir, { recursive: true, force: true });
  };
  try {
    [postgres, kafka] = await Promise.all([
      // Free ports can be taken by someone else before we bind them: retry on a clash.
      retryOnPortClash(async () =>
        startPostgres({ dataDir: join(runDir, "postgres"), port: await freePort(), durable: false }),
      ),
      retryOnPortClash(async () =>
        startKafka({
          dataDir: join(runDir, "kafka"),
          port: await freePort(),
          controllerPort: await freePort(),
          durable: false,
          log,
        }),
      ),
    ]);
  } catch (err) {
    // One may have started while the other failed.
    await stop().catch(() => {});
    throw err;
  }
  log(
    `infra: PostgreSQL ${postgres.version} (pid ${postgres.pid}), Kafka ${kafka.version} (pid ${kafka.pid}), data in ${runDir}`,
  );
  return { postgresUrl: postgres.url, kafkaBrokers: kafka.brokers, kind: "local", stop };
}

async function retryOnPortClash<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      const clash = /address already in use|could not bind/i.test(String(err));
      if (!clash || attempt === 3) throw err;
    }
  }
}

/** Run dirs of processes that died without cleaning up (SIGKILL); their servers are gone with them. */
async function removeAbandonedRuns(runs: string): Promise<void> {
  const entries = await readdir(runs).catch(() => [] as string[]);
  await Promise.all(
    entries.map(async (entry) => {
      const pid = Number(entry.split("-")[0]);
      if (Number.isInteger(pid) && pid > 0 && !isAlive(pid)) {
        await removeDataDir(join(runs, entry, "postgres"));
        await rm(join(runs, entry), { recursive: true, force: true });
      }
    }),
  );
}

/** Whether a process of this pid exists (one of another user's counts: EPERM). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
