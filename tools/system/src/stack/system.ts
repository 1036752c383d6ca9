import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ALL_TOPICS } from "@saga/contracts";
import { DEV_AUTH_SECRET, mintToken } from "@saga/gateway";
import { buildAll, bundleOf } from "@saga/tools/build";
import {
  cacheDir,
  createDatabase,
  createTopics,
  freePort,
  isPortFree,
  type KafkaServer,
  type PostgresServer,
  startKafka,
  startPostgres,
} from "@saga/tools/infra";
import { createNodeProcess, type NodeProcess, type Output } from "./node-process.ts";

export type SystemPorts = {
  postgres: number;
  kafka: number;
  kafkaController: number;
  gateway: number;
  /** The gateway's `/metrics`, apart from its API. */
  gatewayMetrics: number;
  users: number[];
  order: number;
  relays: number[];
};

/** The ports of docs/design.md, used by `npm start`. */
export const DEFAULT_PORTS: SystemPorts = {
  postgres: 5432,
  kafka: 9092,
  kafkaController: 9093,
  gateway: 8080,
  gatewayMetrics: 9480,
  users: [8081, 8082],
  order: 8091,
  relays: [9400, 9401],
};

/** Free ports for a private copy of the system (chaos run, benchmark) beside a running `npm start`. */
export async function freePorts(): Promise<SystemPorts> {
  const next = () => freePort();
  return {
    postgres: await next(),
    kafka: await next(),
    kafkaController: await next(),
    gateway: await next(),
    gatewayMetrics: await next(),
    users: [await next(), await next()],
    order: await next(),
    relays: [await next(), await next()],
  };
}

export type SystemOptions = {
  ports?: SystemPorts;
  /** Data of PostgreSQL and Kafka; kept between runs. */
  dataDir?: string;
  /** fsync on: a PostgreSQL restart loses nothing. Off only for throwaway data. */
  durable?: boolean;
  /** Load pg_stat_statements (the benchmark counts statements per saga with it). */
  statementStats?: boolean;
  /** Extra environment for every Node process. */
  env?: Record<string, string>;
  output: Output;
  log: (line: string) => void;
  /** Restart a Node process that exits by itself, with back-off (`npm start`; not the chaos run). */
  restartOnExit?: boolean;
  /**
   * Run on servers that are already up (a test run's), in databases `<prefix>user_db` and
   * `<prefix>order_db` and under topic prefix `<prefix>`, instead of starting PostgreSQL and Kafka.
   */
  external?: { postgresUrl: string; kafkaBrokers: string[]; prefix: string };
  /**
   * `npm start`: the gateway in AUTH_DEV_MODE, verifying tokens with the public development key, so
   * that `npm run token` mints tokens for it. Otherwise the gateway gets a secret of this run's own.
   */
  devAuth?: boolean;
};

export type System = {
  ports: SystemPorts;
  userDbUrl: string;
  orderDbUrl: string;
  kafkaBrokers: string[];
  gatewayUrl: string;
  /** A token the gateway accepts: a user's (its id as subject), or an admin's. */
  token(
    subject: string,
    opts?: { admin?: boolean; ttlSeconds?: number; issuer?: string; audience?: string },
  ): Promise<string>;
  /** The secret the gateway gives the services; a request straight to a service needs it. */
  internalSecret: string;
  /** Every Node process by name: gateway, user-1, user-2, order, relay-1, relay-2. */
  processes: Map<string, NodeProcess>;
  /** The pid of every running process, PostgreSQL and Kafka included. */
  pids(): Record<string, number>;
  restartPostgres(downMs?: number): Promise<void>;
  restartKafka(downMs?: number): Promise<void>;
  stop(): Promise<void>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts PostgreSQL, Kafka and every process of the system (gateway, two user-service instances,
 * order-service, two relays) and resolves once all of them answer their readiness checks.
 */
export async function startSystem(opts: SystemOptions): Promise<System> {
  const ports = opts.ports ?? DEFAULT_PORTS;
  const dataDir = opts.dataDir ?? join(cacheDir, "data");
  const durable = opts.durable ?? true;
  const { log } = opts;

  const ours = [ports.gateway, ports.gatewayMetrics, ports.order, ...ports.users, ...ports.relays];
  for (const port of opts.external ? ours : [ports.postgres, ports.kafka, ports.kafkaController, ...ours]) {
    if (!(await isPortFree(port))) throw new Error(`port ${port} is taken: is the system already running?`);
  }

  const startPg = () =>
    startPostgres({
      dataDir: join(dataDir, "postgres"),
      port: ports.postgres,
      logFile: join(dataDir, "postgres.log"),
      durable,
      statementStats: opts.statementStats,
    });
  const startBroker = () =>
    startKafka({
      dataDir: join(dataDir, "kafka"),
      port: ports.kafka,
      controllerPort: ports.kafkaController,
      logFile: join(dataDir, "kafka.log"),
      durable: true,
      log,
    });

  const started = performance.now();
  let postgres: PostgresServer | undefined;
  let kafka: KafkaServer | undefined;
  const processes = new Map<string, NodeProcess>();

  const stop = async () => {
    // Producers first, so nothing is left half-done in a consumer when the broker goes.
    await Promise.all([...processes.values()].map((p) => p.stop()));
    await Promise.all([postgres?.stop(), kafka?.stop()]);
  };

  try {
    let postgresUrl: string;
    let kafkaBrokers: string[];
    const prefix = opts.external?.prefix ?? "";
    if (opts.external) {
      ({ postgresUrl, kafkaBrokers } = opts.external);
    } else {
      [postgres, kafka] = await Promise.all([startPg(), startBroker()]);
      postgresUrl = postgres.url;
      kafkaBrokers = kafka.brokers;
    }
    const userDbUrl = await createDatabase(postgresUrl, `${prefix.replace(/\W/g, "_")}user_db`);
    const orderDbUrl = await createDatabase(postgresUrl, `${prefix.replace(/\W/g, "_")}order_db`);
    await createTopics(
      kafkaBrokers,
      ALL_TOPICS.map((t) => `${prefix}${t}`),
      6,
    );
    log(`system: PostgreSQL and Kafka up in ${seconds(started)}s`);

    // Secrets of this run: a fresh pair for every start (the tokens come from `token()`).
    const internalSecret = randomBytes(32).toString("base64url");
    const authSecret = opts.devAuth ? DEV_AUTH_SECRET : randomBytes(32).toString("base64url");
    const common = {
      KAFKA_BROKERS: kafkaBrokers.join(","),
      KAFKA_TOPIC_PREFIX: prefix,
      LOG_LEVEL: "info",
      ...opts.env,
    };
    const add = (name: string, entry: string, port: number, env: Record<string, string>) =>
      processes.set(
        name,
        createNodeProcess(
          {
            name,
            entry,
            port,
            env: { ...common, ...env },
            ...(opts.restartOnExit ? { restart: { log } } : {}),
          },
          opts.output,
        ),
      );

    // What production runs: the bundles of `npm run build`, made afresh from the sources here.
    await buildAll(log);
    for (const [i, port] of ports.users.entries()) {
      add(`user-${i + 1}`, bundleOf("user-service"), port, {
        DATABASE_URL: userDbUrl,
        INTERNAL_SECRET: internalSecret,
        INSTANCE_ID: `user-${i + 1}`,
      });
    }
    add("order", bundleOf("order-service"), ports.order, {
      DATABASE_URL: orderDbUrl,
      INTERNAL_SECRET: internalSecret,
      INSTANCE_ID: "order-1",
    });
    for (const [i, port] of ports.relays.entries()) {
      add(`relay-${i + 1}`, bundleOf("relay"), port, {
        USER_DB_URL: userDbUrl,
        ORDER_DB_URL: orderDbUrl,
        RELAY_ID: `relay-${i + 1}`,
      });
    }
    add("gateway", bundleOf("gateway"), ports.gateway, {
      USER_SERVICE_URLS: ports.users.map((p) => `http://127.0.0.1:${p}`).join(","),
      ORDER_SERVICE_URL: `http://127.0.0.1:${ports.order}`,
      METRICS_PORT: String(ports.gatewayMetrics),
      INTERNAL_SECRET: internalSecret,
      ...(opts.devAuth ? { AUTH_DEV_MODE: "true" } : { AUTH_SECRET: authSecret }),
    });

    // The services migrate at start-up; one user-service first, so the second finds the work done.
    const [first, ...rest] = [...processes.values()];
    await first?.start();
    await Promise.all(rest.map((p) => p.start()));
    log(`system: all processes ready in ${seconds(started)}s`);

    return {
      ports,
      userDbUrl,
      orderDbUrl,
      kafkaBrokers,
      gatewayUrl: `http://127.0.0.1:${ports.gateway}`,
      token: (subject, { admin = false, ...claims } = {}) =>
        mintToken({ secret: authSecret, subject, role: admin ? "admin" : undefined, ...claims }),
      internalSecret,
      processes,
      pids() {
        const out: Record<string, number> = {};
        if (postgres) out.postgres = postgres.pid;
        if (kafka) out.kafka = kafka.pid;
        for (const [name, p] of processes) {
          const pid = p.pid();
          if (pid !== undefined) out[name] = pid;
        }
        return out;
      },
      async restartPostgres(downMs = 1000) {
        if (!postgres) throw new Error("restartPostgres: this system runs on external servers");
        await postgres.stop();
        await sleep(downMs);
        postgres = await startPg();
      },
      async restartKafka(downMs = 1000) {
        if (!kafka) throw new Error("restartKafka: this system runs on external servers");
        await kafka.stop();
        await sleep(downMs);
        kafka = await startBroker();
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}
