import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ALL_TOPICS } from "@saga/contracts";
import { DEV_AUTH_SECRET, mintToken } from "@saga/gateway";
import { parseEnv, statementTimeoutEnv } from "@saga/messaging";
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
  type Tool,
} from "@saga/tools/infra";
import { EDGE_LIMITS, type Edge, type EdgeLimits, type EdgeSpec, startEdge } from "./edge.ts";
import { type FaultProxyHost, type RemoteFaultProxy, startFaultProxyHost } from "./fault-proxy-host.ts";
import { childPids, freezeFor, signal } from "./freeze.ts";
import { type Link, type LinkedProcess, linkedProcesses, linkName, orderProcesses } from "./links.ts";
import { createNodeProcess, type NodeProcess, type Output } from "./node-process.ts";

export type SystemPorts = {
  postgres: number;
  kafka: number;
  kafkaController: number;
  gateway: number;
  /** The gateway's `/metrics`, apart from its API. */
  gatewayMetrics: number;
  users: number[];
  /** One per order-service instance: the system runs as many as there are ports. */
  orders: number[];
  relays: number[];
};

/** The ports of docs/design.md, used by `npm start`: one order-service instance. */
export const DEFAULT_PORTS: SystemPorts = {
  postgres: 5432,
  kafka: 9092,
  kafkaController: 9093,
  gateway: 8080,
  gatewayMetrics: 9480,
  users: [8081, 8082],
  orders: [8091],
  relays: [9400, 9401],
};

/** The ports of docs/design.md with `orderServices` order-service instances: 8091, 8092… */
export function defaultPorts(orderServices = 1): SystemPorts {
  return { ...DEFAULT_PORTS, orders: orderProcesses(orderServices).map((_, i) => 8091 + i) };
}

/**
 * Free ports for a private copy of the system (chaos run, benchmark) beside a running `npm start`, with
 * `orderServices` order-service instances; out of the kernel's ephemeral range, as they are listened on
 * only once PostgreSQL and Kafka are up.
 */
export async function freePorts(orderServices = 1): Promise<SystemPorts> {
  const next = freePort;
  const orders: number[] = [];
  for (const _ of orderProcesses(orderServices)) orders.push(await next());
  return {
    postgres: await next(),
    kafka: await next(),
    kafkaController: await next(),
    gateway: await next(),
    gatewayMetrics: await next(),
    users: [await next(), await next()],
    orders,
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
  /**
   * The chaos run: each service and relay reaches PostgreSQL and Kafka through fault proxies of its own
   * (`System.links`), so that a network fault can cut one process off while the others go on. Kafka
   * gets a listener per process that advertises its proxy, so that the clients' reconnections go
   * through it too. Tools that read the system (the chaos checker, the load) connect directly.
   */
  faultProxies?: boolean;
  /**
   * A proxy in front of the gateway, on the gateway's port, refusing in C what is past its bounds of
   * orders in flight (edge.ts; the bench's `--edge`): nginx with static bounds, or HAProxy with bounds that
   * follow the gateway's.
   */
  edge?: { kind: "nginx" | "haproxy"; tool: Tool; limits?: EdgeLimits };
  /**
   * Aborts the start (`npm start`'s Ctrl-C): what has started is stopped, in order, once the step in
   * progress ends (a process's start ends at once), and `startSystem` rejects with the signal's reason.
   */
  signal?: AbortSignal;
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
  /**
   * The `DB_STATEMENT_TIMEOUT_MS` the services run with (0: none): `SystemOptions.env`'s, or else the
   * caller's environment's, which every process inherits, or else the default.
   */
  statementTimeoutMs: number;
  /**
   * Every Node process by name: gateway, user-1, user-2, the order-service's (`order`, or `order-1`,
   * `order-2`… for several: `orderProcesses`), relay-1, relay-2.
   */
  processes: Map<string, NodeProcess>;
  /** The pid of every running process, PostgreSQL and Kafka included. */
  pids(): Record<string, number>;
  /** With `faultProxies`: the proxy of each process's link to PostgreSQL and to Kafka. */
  links: Map<Link, RemoteFaultProxy>;
  /**
   * Stops a process (a Node process by name, `kafka`, or `postgres` with all of its backends) with
   * SIGSTOP and continues it with SIGCONT after `ms`: a process that hangs with its connections and
   * locks held, as a long GC pause or a stalled VM does.
   */
  freeze(name: string, ms: number): Promise<void>;
  restartPostgres(downMs?: number): Promise<void>;
  restartKafka(downMs?: number): Promise<void>;
  stop(): Promise<void>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts PostgreSQL, Kafka and every process of the system (gateway, two user-service instances, an
 * order-service instance per port of `ports.orders`, two relays) and resolves once all of them answer
 * their readiness checks.
 */
export async function startSystem(opts: SystemOptions): Promise<System> {
  const ports = opts.ports ?? DEFAULT_PORTS;
  const dataDir = opts.dataDir ?? join(cacheDir, "data");
  const durable = opts.durable ?? true;
  const { log, signal: abort } = opts;
  // Between the steps of the start: an abort stops what has started (the catch below) and goes no further.
  const checkpoint = () => abort?.throwIfAborted();

  const orderNames = orderProcesses(ports.orders.length);
  const linked = linkedProcesses(ports.orders.length);
  const ours = [ports.gateway, ports.gatewayMetrics, ...ports.orders, ...ports.users, ...ports.relays];
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
      log,
    });
  // With fault proxies: a broker listener per linked process, and the port of the proxy in front of it.
  const kafkaListeners = new Map<LinkedProcess, { name: string; port: number; advertisedPort: number }>();
  if (opts.faultProxies && !opts.external) {
    // Listened on once the broker and the proxies start: out of the ephemeral range too (freePort).
    const next = freePort;
    for (const p of linked) {
      const name = `CLIENT_${p.replace(/\W/g, "_").toUpperCase()}`;
      kafkaListeners.set(p, { name, port: await next(), advertisedPort: await next() });
    }
  }
  const startBroker = () =>
    startKafka({
      dataDir: join(dataDir, "kafka"),
      port: ports.kafka,
      controllerPort: ports.kafkaController,
      proxiedListeners: [...kafkaListeners.values()],
      logFile: join(dataDir, "kafka.log"),
      durable: true,
      log,
    });

  const started = performance.now();
  let postgres: PostgresServer | undefined;
  let kafka: KafkaServer | undefined;
  const processes = new Map<string, NodeProcess>();
  const links = new Map<Link, RemoteFaultProxy>();
  let proxyHost: FaultProxyHost | undefined;
  const frozen = new Set<number>();
  let edge: Edge | undefined;

  const stop = async () => {
    for (const pid of frozen) signal(pid, "SIGCONT");
    await edge?.stop();
    // Producers first, so nothing is left half-done in a consumer when the broker goes.
    await Promise.all([...processes.values()].map((p) => p.stop()));
    await proxyHost?.close();
    await Promise.all([postgres?.stop(), kafka?.stop()]);
  };

  try {
    checkpoint();
    let postgresUrl: string;
    let kafkaBrokers: string[];
    const prefix = opts.external?.prefix ?? "";
    if (opts.external) {
      ({ postgresUrl, kafkaBrokers } = opts.external);
    } else {
      // Both waited for: when one fails, the other is up by then and is stopped too.
      const [pg, broker] = await Promise.allSettled([startPg(), startBroker()]);
      if (pg.status === "fulfilled") postgres = pg.value;
      if (broker.status === "fulfilled") kafka = broker.value;
      if (pg.status === "rejected") throw pg.reason;
      if (broker.status === "rejected") throw broker.reason;
      postgresUrl = pg.value.url;
      kafkaBrokers = broker.value.brokers;
    }
    checkpoint();
    const userDbUrl = await createDatabase(postgresUrl, `${prefix.replace(/\W/g, "_")}user_db`);
    const orderDbUrl = await createDatabase(postgresUrl, `${prefix.replace(/\W/g, "_")}order_db`);
    await createTopics(
      kafkaBrokers,
      ALL_TOPICS.map((t) => `${prefix}${t}`),
      6,
    );
    log(`system: PostgreSQL and Kafka up in ${seconds(started)}s`);
    checkpoint();

    // Each linked process's own way to PostgreSQL and Kafka.
    const via = new Map<LinkedProcess, { postgresPort: number; kafkaBrokers: string }>();
    if (opts.faultProxies) {
      if (opts.external) throw new Error("faultProxies: not on external servers");
      const host = await startFaultProxyHost();
      proxyHost = host;
      for (const p of linked) {
        const listener = kafkaListeners.get(p) as { port: number; advertisedPort: number };
        const [pg, broker] = await Promise.all([
          host.add({ name: linkName(p, "postgres"), targetPort: ports.postgres }),
          host.add({
            name: linkName(p, "kafka"),
            port: listener.advertisedPort,
            targetPort: listener.port,
          }),
        ]);
        links.set(linkName(p, "postgres"), pg);
        links.set(linkName(p, "kafka"), broker);
        via.set(p, { postgresPort: pg.port, kafkaBrokers: `127.0.0.1:${broker.port}` });
      }
    }
    /** A process's database URL and brokers: through its proxies when there are some. */
    const reach = (p: LinkedProcess, url: string): { url: string; KAFKA_BROKERS?: string } => {
      const v = via.get(p);
      if (!v) return { url };
      const proxied = new URL(url);
      proxied.port = String(v.postgresPort);
      return { url: proxied.toString(), KAFKA_BROKERS: v.kafkaBrokers };
    };

    // Secrets of this run: a fresh pair for every start (the tokens come from `token()`).
    const internalSecret = randomBytes(32).toString("base64url");
    const authSecret = opts.devAuth ? DEV_AUTH_SECRET : randomBytes(32).toString("base64url");
    const common = {
      KAFKA_BROKERS: kafkaBrokers.join(","),
      KAFKA_TOPIC_PREFIX: prefix,
      LOG_LEVEL: "info",
      ...opts.env,
    };
    // Each process runs with `common` over the caller's environment (node-process.ts), and reads it there.
    const statementTimeoutMs = statementTimeoutOf({ ...process.env, ...common });
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
    checkpoint();
    for (const [i, port] of ports.users.entries()) {
      const name = `user-${i + 1}` as LinkedProcess;
      const { url, ...kafkaEnv } = reach(name, userDbUrl);
      add(name, bundleOf("user-service"), port, {
        DATABASE_URL: url,
        ...kafkaEnv,
        INTERNAL_SECRET: internalSecret,
        INSTANCE_ID: name,
      });
    }
    for (const [i, port] of ports.orders.entries()) {
      const name = orderNames[i] as LinkedProcess;
      const { url, ...kafkaEnv } = reach(name, orderDbUrl);
      add(name, bundleOf("order-service"), port, {
        DATABASE_URL: url,
        ...kafkaEnv,
        INTERNAL_SECRET: internalSecret,
        INSTANCE_ID: `order-${i + 1}`,
      });
    }
    for (const [i, port] of ports.relays.entries()) {
      const name = `relay-${i + 1}` as LinkedProcess;
      const { url, ...kafkaEnv } = reach(name, userDbUrl);
      add(name, bundleOf("relay"), port, {
        USER_DB_URL: url,
        ORDER_DB_URL: reach(name, orderDbUrl).url,
        ...kafkaEnv,
        RELAY_ID: name,
      });
    }
    const gatewayPort = opts.edge ? await freePort() : ports.gateway;
    add("gateway", bundleOf("gateway"), gatewayPort, {
      USER_SERVICE_URLS: ports.users.map((p) => `http://127.0.0.1:${p}`).join(","),
      ORDER_SERVICE_URLS: ports.orders.map((p) => `http://127.0.0.1:${p}`).join(","),
      METRICS_PORT: String(ports.gatewayMetrics),
      INTERNAL_SECRET: internalSecret,
      ...(opts.devAuth ? { AUTH_DEV_MODE: "true" } : { AUTH_SECRET: authSecret }),
    });

    // The services migrate at start-up; one user-service first, so the second finds the work done.
    const [first, ...rest] = [...processes.values()];
    await first?.start(abort);
    checkpoint();
    await Promise.all(rest.map((p) => p.start(abort)));
    checkpoint();
    log(`system: all processes ready in ${seconds(started)}s`);
    if (opts.edge) {
      const { kind, tool, limits = EDGE_LIMITS } = opts.edge;
      const spec: EdgeSpec =
        kind === "nginx"
          ? { kind, tool, limits }
          : { kind, tool, gatewayMetricsUrl: `http://127.0.0.1:${ports.gatewayMetrics}/metrics` };
      checkpoint();
      edge = await startEdge(spec, ports.gateway, gatewayPort);
      log(
        kind === "nginx"
          ? `system: nginx in front of the gateway (orders in flight: ${limits.ordersWrite} POSTs, ${limits.ordersRead} reads)`
          : "system: HAProxy in front of the gateway (its queues as long as the gateway's bounds; edge.ts)",
      );
    }

    return {
      ports,
      userDbUrl,
      orderDbUrl,
      kafkaBrokers,
      gatewayUrl: `http://127.0.0.1:${ports.gateway}`,
      token: (subject, { admin = false, ...claims } = {}) =>
        mintToken({ secret: authSecret, subject, role: admin ? "admin" : undefined, ...claims }),
      internalSecret,
      statementTimeoutMs,
      processes,
      pids() {
        const out: Record<string, number> = {};
        if (postgres) out.postgres = postgres.pid;
        if (kafka) out.kafka = kafka.pid;
        if (edge?.pid !== undefined) out.edge = edge.pid;
        for (const [name, p] of processes) {
          const pid = p.pid();
          if (pid !== undefined) out[name] = pid;
        }
        return out;
      },
      links,
      async freeze(name, ms) {
        const pid =
          name === "postgres" ? postgres?.pid : name === "kafka" ? kafka?.pid : processes.get(name)?.pid();
        if (pid === undefined) throw new Error(`freeze: ${name} is not running`);
        const pids = [pid];
        if (name === "postgres") {
          // A process per connection: the postmaster first, so that it forks none the freeze would miss.
          frozen.add(pid);
          signal(pid, "SIGSTOP");
          pids.push(...(await childPids(pid)));
        }
        await freezeFor(pids, ms, frozen);
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

/** The `statement_timeout` a process started with `env` sets, as the processes parse it (0: none). */
export function statementTimeoutOf(env: Record<string, string | undefined>): number {
  return parseEnv(statementTimeoutEnv, env).DB_STATEMENT_TIMEOUT_MS;
}

function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}
