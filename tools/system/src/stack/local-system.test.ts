import { createServer, type Server } from "node:net";
import { hasPrometheus, loadPrometheusConfig, prometheusConfigs } from "@saga/monitoring";
import { freePort, isPortFree } from "@saga/tools/infra";
import { kafkaBrokers, postgresUrl, uniqueName } from "@saga/tools/test/harness";
import { expect, it, onTestFinished } from "vitest";
import { scrapingSystem, startLocalSystem } from "./local-system.ts";
import { DEFAULT_PORTS, defaultPorts, freePorts } from "./system.ts";

// `npm start` on the test run's PostgreSQL and Kafka, on free ports.
const external = () => ({
  postgresUrl: postgresUrl(),
  kafkaBrokers: kafkaBrokers(),
  prefix: `${uniqueName("local")}.`,
});

/** A port something else listens on, as Debian's prometheus.service does on 9090. */
async function heldPort(): Promise<number> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

it.runIf(hasPrometheus())(
  "runs without Prometheus when its port is taken (Debian's prometheus.service), and says so",
  async () => {
    const prometheusPort = await heldPort();
    const lines: string[] = [];
    const local = await startLocalSystem({
      ports: await freePorts(),
      external: external(),
      env: { LOG_LEVEL: "warn" },
      output: () => {},
      log: (line) => lines.push(line),
      prometheusPort,
    });
    try {
      expect(local.prometheus).toBeUndefined();
      expect(lines.join("\n")).toContain(`port ${prometheusPort} is taken`);
      expect((await fetch(`${local.system.gatewayUrl}/ready`)).status).toBe(200);
    } finally {
      await local.stop();
    }
  },
);

it("a stop asked for during the start starts nothing more and stops what has started before it returns", async () => {
  const ports = await freePorts();
  const stopAsked = new AbortController();
  const heard = new Set<string>();
  const starting = startLocalSystem({
    ports,
    external: external(),
    env: { LOG_LEVEL: "info" },
    // Ctrl-C once the first user-service listens, before it is ready (the others start once it is).
    output: (name, line) => {
      heard.add(name);
      if (name === "user-1" && line.includes('"msg":"listening"')) stopAsked.abort(new Error("SIGINT"));
    },
    log: () => {},
    prometheusPort: await freePort(),
    signal: stopAsked.signal,
  });
  // Had the stop gone unheard, what started still stops.
  onTestFinished(() => starting.then((local) => local.stop()).catch(() => {}));

  await expect(starting).rejects.toThrow("SIGINT");
  // Nothing more was started after the stop was asked for…
  expect([...heard]).toEqual(["user-1"]);
  // …and what was is stopped: the next start finds the ports free.
  for (const port of [ports.gateway, ports.gatewayMetrics, ...ports.orders, ...ports.users, ...ports.relays])
    expect(await isPortFree(port), `port ${port}`).toBe(true);
});

it("a stop asked for once the system is up, before Prometheus, does not start Prometheus", async () => {
  const stopAsked = new AbortController();
  const lines: string[] = [];
  const starting = startLocalSystem({
    ports: await freePorts(),
    external: external(),
    env: { LOG_LEVEL: "warn" },
    output: () => {},
    // Ctrl-C as startSystem returns: its last line. Prometheus is not installed, or its port is held:
    // either way, a start of it says so.
    log: (line) => {
      lines.push(line);
      if (line.startsWith("system: all processes ready")) stopAsked.abort(new Error("SIGINT"));
    },
    prometheusPort: await heldPort(),
    signal: stopAsked.signal,
  });
  onTestFinished(() => starting.then((local) => local.stop()).catch(() => {}));

  await expect(starting).rejects.toThrow("SIGINT");
  expect(lines.some((line) => line.startsWith("system: all processes ready"))).toBe(true);
  expect(lines.filter((line) => line.includes("Prometheus"))).toEqual([]);
});

it("has its Prometheus scrape every order-service instance it runs: the file's targets with one, 8091 and 8092 with two", async () => {
  const file = await loadPrometheusConfig(prometheusConfigs.local);
  const targets = (config: typeof file) =>
    Object.fromEntries(
      config.scrape_configs.map((job: { job_name: string; static_configs: { targets: string[] }[] }) => [
        job.job_name,
        job.static_configs.flatMap((s) => s.targets),
      ]),
    );
  expect(defaultPorts(1)).toEqual(DEFAULT_PORTS);
  expect(scrapingSystem(file, DEFAULT_PORTS)).toEqual(file);
  expect(targets(scrapingSystem(file, defaultPorts(2)))).toEqual({
    ...targets(file),
    "order-service": ["127.0.0.1:8091", "127.0.0.1:8092"],
  });
});
