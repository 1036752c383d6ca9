import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { ALL_TOPICS } from "@saga/contracts";
import { parseGatewayEnv } from "@saga/gateway";
import { parseOrderServiceEnv } from "@saga/order-service";
import { parseRelayEnv } from "@saga/relay/src/env.ts";
import { PROCESSES as BUILT, bundleOf } from "@saga/tools/build";
import {
  DOCKER_IMAGES,
  KAFKA_VERSION,
  kafkaImageEnvironment,
  REPLICATION_SETTINGS,
  SINGLE_NODE_SETTINGS,
} from "@saga/tools/infra";
import { parseUserServiceEnv } from "@saga/user-service";
import { describe, expect, it, onTestFinished } from "vitest";
import { parse } from "yaml";
import { prometheusConfigs, repoRoot } from "../src/paths.ts";

type DependsOn = Record<string, { condition: string }>;
type Service = {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | number>;
  ports?: string[];
  volumes?: string[];
  depends_on?: DependsOn;
  healthcheck?: {
    test: string[];
    interval?: string;
    timeout?: string;
    start_period?: string;
    retries?: number;
  };
  restart?: string;
};

const compose = parse(readFileSync(join(repoRoot, "compose.yaml"), "utf8"), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
const names = Object.keys(services);

/** The environment parser of each Node entry point: compose must satisfy it as the process would. */
const PROCESSES: Record<string, (env: Record<string, string>) => unknown> = {
  "dist/bin/gateway.mjs": parseGatewayEnv,
  "dist/bin/user-service.mjs": parseUserServiceEnv,
  "dist/bin/order-service.mjs": parseOrderServiceEnv,
  "dist/bin/relay.mjs": parseRelayEnv,
};

/** A value Compose takes from the environment and refuses to start without: `${AUTH_SECRET:?why}`. */
const REQUIRED_FROM_ENV = /^\$\{(\w+):\?[^}]+\}$/;
/** The environment as Compose would pass it, with a value for each variable it requires. */
const envOf = (s: Service): Record<string, string> =>
  Object.fromEntries(
    Object.entries(s.environment ?? {}).map(([k, v]) => [
      k,
      REQUIRED_FROM_ENV.test(String(v)) ? "a-secret-from-the-environment-of-32+-chars" : String(v),
    ]),
  );
const entryOf = (s: Service) => (Array.isArray(s.command) ? s.command[0] : s.command);
const nodeServices = Object.entries(services).filter(([, s]) => s.build !== undefined);
const postgresServices = Object.entries(services).filter(([, s]) => s.image?.startsWith("postgres:"));
/** The server settings of a `postgres -c key=value …` command. */
const postgresSettingsOf = (s: Service): Record<string, string> => {
  const words = Array.isArray(s.command) ? s.command : (s.command ?? "").split(/\s+/);
  return Object.fromEntries(
    words
      .flatMap((word, i) => (words[i - 1] === "-c" ? [word] : []))
      .map((setting) => [setting.slice(0, setting.indexOf("=")), setting.slice(setting.indexOf("=") + 1)]),
  );
};
const servicesRunning = (entry: string) => nodeServices.filter(([, s]) => entryOf(s) === entry);

describe("compose.yaml", () => {
  it("runs every process of the system", () => {
    expect(names.sort()).toEqual(
      [
        "gateway",
        "grafana",
        "kafka",
        "kafka-init",
        "kafka-ui",
        "order-db",
        "order-service",
        "prometheus",
        "relay-1",
        "relay-2",
        "user-db",
        "user-service-1",
        "user-service-2",
      ].sort(),
    );
    expect(servicesRunning("dist/bin/user-service.mjs")).toHaveLength(2);
    expect(servicesRunning("dist/bin/relay.mjs")).toHaveLength(2);
  });

  it("depends only on services that exist, with a healthcheck where it waits for health", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries(service.depends_on ?? {})) {
        expect(names, `${name} depends on ${target}`).toContain(target);
        expect(["service_started", "service_healthy", "service_completed_successfully"]).toContain(condition);
        if (condition === "service_healthy")
          expect(services[target]?.healthcheck, `${target} has no healthcheck`).toBeDefined();
        if (condition === "service_completed_successfully")
          expect(services[target]?.restart, target).toBe("no");
      }
    }
  });

  it("publishes every host port once", () => {
    const hostPorts = Object.values(services).flatMap((s) =>
      (s.ports ?? []).map((p) => p.split(":").slice(0, -1).join(":")),
    );
    expect(hostPorts.length).toBeGreaterThan(0);
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it("pins every image it pulls", () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build !== undefined) continue;
      expect(service.image, name).toMatch(/^[\w./-]+:[\w.-]+$/);
      expect(service.image, name).not.toMatch(/:(latest|stable|main)$/);
    }
  });

  it("mounts only files and directories that exist", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const volume of service.volumes ?? []) {
        const [source] = volume.split(":");
        if (!source) throw new Error(`${name}: empty volume`);
        if (source.startsWith("."))
          expect(existsSync(join(repoRoot, source)), `${name}: ${source}`).toBe(true);
        else expect(Object.keys(compose.volumes), `${name}: named volume ${source}`).toContain(source);
      }
    }
  });

  it.each(nodeServices)(
    "%s: runs an entry point that exists, with the environment its schema requires",
    (name, service) => {
      const entry = entryOf(service) ?? "";
      expect(Object.keys(PROCESSES), name).toContain(entry);
      // A bundle `npm run build` makes (dist/ need not exist yet: tests run before or beside the build),
      // from a source that exists.
      const built = Object.entries(BUILT).find(
        ([process]) => bundleOf(process as keyof typeof BUILT) === entry,
      );
      expect(built, entry).toBeDefined();
      expect(existsSync(join(repoRoot, built?.[1] ?? "")), built?.[1]).toBe(true);
      const env = envOf(service);
      expect(() => PROCESSES[entry]?.(env)).not.toThrow();
      // It listens where the Compose network reaches it, on the port it is probed at; only the
      // gateway's API is published.
      expect(env.HOST).toBe("0.0.0.0");
      expect(service.ports ?? []).toEqual(name === "gateway" ? [`${env.PORT}:${env.PORT}`] : []);
      // Where its health check asks /ready (the Dockerfile's, below).
      expect(env.PORT, name).toMatch(/^\d+$/);
    },
  );

  // What the tests ran against is what Compose runs: a setting missing here (wal_level=logical, the cap
  // on a slot's WAL) breaks or changes the relay only in Compose.
  it("runs PostgreSQL with the replication settings of the local and the Docker test servers", () => {
    expect(postgresServices.map(([name]) => name).sort()).toEqual(["order-db", "user-db"]);
    for (const [name, service] of postgresServices) {
      const settings = postgresSettingsOf(service);
      for (const [key, value] of Object.entries(REPLICATION_SETTINGS))
        expect(settings[key], `${name}: ${key}`).toBe(String(value));
      expect(service.image, name).toBe(DOCKER_IMAGES.postgres);
    }
  });

  it("runs the local broker's Kafka version with its single-node settings", () => {
    for (const name of ["kafka", "kafka-init"])
      expect(services[name]?.image, name).toBe(`apache/kafka:${KAFKA_VERSION}`);
    const env = envOf(services.kafka as Service);
    for (const [key, value] of Object.entries(kafkaImageEnvironment(SINGLE_NODE_SETTINGS)))
      expect(env[key], key).toBe(value);
  });

  it("asks PostgreSQL over TCP whether it is ready, which the image's first-run init server does not listen on", () => {
    // Without -h, pg_isready asks the Unix socket, on which the image's entrypoint runs a temporary server
    // while it creates the database: healthy, then gone, before the real server starts.
    // https://github.com/docker-library/postgres/blob/master/docker-entrypoint.sh
    for (const [name, service] of postgresServices) {
      const test = service.healthcheck?.test ?? [];
      expect(test.slice(0, 2), name).toEqual(["CMD", "pg_isready"]);
      const host = test.includes("-h") ? test[test.indexOf("-h") + 1] : undefined;
      expect(host, `${name}: pg_isready -h`).toBe("127.0.0.1");
    }
  });

  it("points every connection at a service that exists, on the port it listens on", () => {
    const postgresOf = (url: string) => {
      const { hostname, port, pathname } = new URL(url);
      const db = services[hostname];
      expect(db?.image, url).toMatch(/^postgres:/);
      expect(port).toBe("5432");
      expect(envOf(db as Service).POSTGRES_DB).toBe(pathname.slice(1));
      return hostname;
    };
    const kafkaListener = String(services.kafka?.environment?.KAFKA_ADVERTISED_LISTENERS).match(
      /INTERNAL:\/\/([^,]+)/,
    )?.[1];
    for (const [name, service] of nodeServices) {
      const env = envOf(service);
      for (const key of ["DATABASE_URL", "USER_DB_URL", "ORDER_DB_URL"]) if (env[key]) postgresOf(env[key]);
      if (entryOf(service) !== "dist/bin/gateway.mjs") expect(env.KAFKA_BROKERS, name).toBe(kafkaListener);
    }
    expect(postgresOf(envOf(services["user-service-1"] as Service).DATABASE_URL ?? "")).toBe("user-db");
    expect(postgresOf(envOf(services["order-service"] as Service).DATABASE_URL ?? "")).toBe("order-db");

    // The list, not ORDER_SERVICE_URL, the one-instance name the gateway still reads.
    expect(Object.keys(envOf(services.gateway as Service))).not.toContain("ORDER_SERVICE_URL");
    const gateway = parseGatewayEnv(envOf(services.gateway as Service));
    const origin = ([host, s]: [string, Service]) => `http://${host}:${envOf(s).PORT}`;
    expect(gateway.USER_SERVICE_URLS.sort()).toEqual(
      servicesRunning("dist/bin/user-service.mjs").map(origin).sort(),
    );
    expect(gateway.ORDER_SERVICE_URLS.sort()).toEqual(
      servicesRunning("dist/bin/order-service.mjs").map(origin).sort(),
    );
  });

  it("gives every instance its own id", () => {
    const ids = nodeServices.map(([, s]) => envOf(s).INSTANCE_ID ?? envOf(s).RELAY_ID);
    expect(ids.every(Boolean)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("creates every topic of contracts/ once, before any service starts", () => {
    const script = String(services["kafka-init"]?.command);
    const topics = script.match(/\b(?:order|user)\.[\w.-]+/g) ?? [];
    expect(topics.sort()).toEqual([...ALL_TOPICS].sort());
    for (const [name, service] of nodeServices) {
      if (entryOf(service) === "dist/bin/gateway.mjs") continue;
      expect(service.depends_on?.["kafka-init"], name).toEqual({
        condition: "service_completed_successfully",
      });
    }
  });

  it("takes every secret from the environment, never a default, and publishes the rest on loopback only", () => {
    const raw = (name: string, key: string) => String(services[name]?.environment?.[key]);
    for (const [name, service] of nodeServices) {
      // The relays serve no API, only their probes and metrics.
      if (entryOf(service) !== "dist/bin/relay.mjs")
        expect(raw(name, "INTERNAL_SECRET"), name).toMatch(REQUIRED_FROM_ENV);
      expect(envOf(service).AUTH_DEV_MODE, name).toBeUndefined();
    }
    expect(raw("gateway", "AUTH_SECRET")).toMatch(REQUIRED_FROM_ENV);
    expect(raw("grafana", "GF_SECURITY_ADMIN_PASSWORD")).toMatch(REQUIRED_FROM_ENV);
    for (const [name, service] of Object.entries(services)) {
      if (name === "gateway") continue;
      for (const port of service.ports ?? []) expect(port, name).toMatch(/^127\.0\.0\.1:/);
    }
  });

  it("has Prometheus scrape every Node service on its port", () => {
    const config = parse(readFileSync(prometheusConfigs.compose, "utf8")) as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const scraped = config.scrape_configs
      .flatMap((j) => j.static_configs.flatMap((s) => s.targets))
      .filter((t) => !t.startsWith("localhost"));
    // The gateway's metrics are on their own port, apart from the API.
    const metricsPort = (s: Service) => envOf(s).METRICS_PORT ?? envOf(s).PORT;
    expect(scraped.sort()).toEqual(nodeServices.map(([name, s]) => `${name}:${metricsPort(s)}`).sort());
  });

  it("provisions Grafana from monitoring/, with an admin password from the environment", () => {
    const grafana = services.grafana as Service;
    expect(envOf(grafana).GF_SECURITY_ADMIN_USER).toBe("admin");
    expect(envOf(grafana).GF_SECURITY_ADMIN_PASSWORD).not.toBe("admin");
    const provider = parse(
      readFileSync(join(repoRoot, "monitoring/grafana/provisioning/dashboards/dashboards.yml"), "utf8"),
    );
    expect(grafana.volumes).toContain("./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro");
    expect(grafana.volumes).toContain(
      `./monitoring/grafana/dashboards:${provider.providers[0].options.path}:ro`,
    );
    const datasource = parse(
      readFileSync(join(repoRoot, "monitoring/grafana/provisioning/datasources/prometheus.yml"), "utf8"),
    );
    expect(datasource.datasources[0].url).toBe("http://prometheus:9090");
  });
});

describe("Dockerfile", () => {
  const dockerfile = readFileSync(join(repoRoot, "Dockerfile"), "utf8");

  it("builds from a pinned Node 24 image and runs the production bundles with plain node, as a non-root user", () => {
    const args = Object.fromEntries([...dockerfile.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
    const bases = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) =>
      (m[1] ?? "").replace(/^\$\{(\w+)\}$/, (_, v) => args[v] ?? v),
    );
    expect(bases.length).toBeGreaterThan(0);
    const nodeVersion = readFileSync(join(repoRoot, ".node-version"), "utf8").trim();
    for (const base of bases) expect(base).toBe(`node:${nodeVersion}-bookworm-slim`);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "--enable-source-maps"\]$/m);
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    // The final stage takes the bundles and nothing else: no node_modules, no sources.
    const final = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
    expect(final).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m);
    expect(final).not.toMatch(/npm ci|COPY \. \./);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
  });

  it("keeps node_modules, caches, history and env files out of the build context", () => {
    const ignored = readFileSync(join(repoRoot, ".dockerignore"), "utf8").split("\n");
    // `COPY . .` would put a developer's secrets into the build stage's layers.
    for (const entry of ["**/node_modules", ".cache", ".git", "**/.env", "**/.env.*", "**/*.env"])
      expect(ignored).toContain(entry);
  });

  // HEALTHCHECK --interval=5s … \n  CMD ["node", "-e", "…"]
  const healthcheck = /^HEALTHCHECK ((?:--[\w-]+=\S+ )+)\\\n\s*CMD (\[.*\])$/m.exec(dockerfile);
  const probe = JSON.parse(healthcheck?.[2] ?? "[]") as string[];

  it("has the health check compose.yaml gives every Node service", () => {
    const options = Object.fromEntries(
      [...(healthcheck?.[1] ?? "").matchAll(/--([\w-]+)=(\S+)/g)].map((m) => [m[1], m[2]]),
    );
    for (const [name, service] of nodeServices) {
      const check = service.healthcheck;
      expect(check?.test, name).toEqual(["CMD", ...probe]);
      expect(
        { interval: check?.interval, timeout: check?.timeout, "start-period": check?.start_period },
        name,
      ).toEqual({
        interval: options.interval,
        timeout: options.timeout,
        "start-period": options["start-period"],
      });
      expect(String(check?.retries), name).toBe(options.retries);
    }
  });

  // The processes listen on different ports by default (gateway 8080, user-service 8081, order-service 8091,
  // relay 9400): the image cannot know which one runs, so PORT is the port it asks.
  it("asks /ready on PORT, and says that PORT is needed when it is not set", async () => {
    expect(probe.slice(0, 2)).toEqual(["node", "-e"]);
    let ready = true;
    const server = createServer((req, res) => {
      res.writeHead(req.url === "/ready" && ready ? 200 : 503).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = String((server.address() as AddressInfo).port);
    const run = async (env: Record<string, string>) => {
      try {
        await promisify(execFile)(process.execPath, probe.slice(1), { env, timeout: 10_000 });
        return { code: 0, stderr: "" };
      } catch (err) {
        const { code, stderr } = err as { code: number; stderr: string };
        return { code, stderr };
      }
    };
    expect(await run({ PORT: port })).toEqual({ code: 0, stderr: "" });
    ready = false;
    expect((await run({ PORT: port })).code).toBe(1);
    const unset = await run({});
    expect(unset.code).toBe(1);
    expect(unset.stderr).toMatch(/PORT is not set/);
  });
});
