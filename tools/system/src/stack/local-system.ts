import {
  hasPrometheus,
  loadPrometheusConfig,
  type PrometheusConfig,
  type PrometheusServer,
  prometheusConfigs,
  startPrometheus,
} from "@saga/monitoring";
import { isPortFree } from "@saga/tools/infra";
import { type System, type SystemOptions, type SystemPorts, startSystem } from "./system.ts";

/** The port of `npm start`'s Prometheus (docs/design.md). */
export const PROMETHEUS_PORT = 9090;

export type LocalSystem = {
  system: System;
  /** None when Prometheus is not installed or its port is taken: the system runs without it. */
  prometheus: PrometheusServer | undefined;
  /** Stops Prometheus, then the system, in order, and resolves once every process has exited. */
  stop(): Promise<void>;
};

/**
 * What `npm start` runs: the system (`startSystem`), then Prometheus scraping it on `prometheusPort`.
 * Prometheus is optional: without it installed, or with its port taken, the system runs without it, and a
 * line says why.
 * When `signal` aborts before the start is done, what has started is stopped, in order, and this rejects
 * with the signal's reason; when a step fails, the same, with its error.
 */
export async function startLocalSystem(
  opts: SystemOptions & { prometheusPort: number },
): Promise<LocalSystem> {
  const { prometheusPort, ...systemOptions } = opts;
  const system = await startSystem(systemOptions);
  let prometheus: PrometheusServer | undefined;
  const stop = async () => {
    await prometheus?.stop();
    await system.stop();
  };
  try {
    // A stop asked for once the system was up starts nothing more.
    opts.signal?.throwIfAborted();
    prometheus = await startOptionalPrometheus(prometheusPort, system.ports, opts.log);
    opts.signal?.throwIfAborted();
  } catch (err) {
    await stop();
    throw err;
  }
  return { system, prometheus, stop };
}

/**
 * The local run's scrape configuration (monitoring/prometheus/prometheus.yml) with each job's targets at the
 * ports the system runs on: the file names those of docs/design.md, with one order-service instance, and
 * `npm start -- --order-services 2` runs a second on 8092.
 */
export function scrapingSystem(config: PrometheusConfig, ports: SystemPorts): PrometheusConfig {
  const address = (port: number) => `127.0.0.1:${port}`;
  const targets: Record<string, string[]> = {
    gateway: [address(ports.gatewayMetrics)],
    "user-service": ports.users.map(address),
    "order-service": ports.orders.map(address),
    relay: ports.relays.map(address),
  };
  return {
    ...config,
    scrape_configs: config.scrape_configs.map((job: { job_name: string }) => {
      const scraped = targets[job.job_name];
      return scraped ? { ...job, static_configs: [{ targets: scraped }] } : job;
    }),
  };
}

async function startOptionalPrometheus(
  port: number,
  ports: SystemPorts,
  log: (line: string) => void,
): Promise<PrometheusServer | undefined> {
  if (!hasPrometheus()) {
    log("Prometheus is not installed (npm run setup installs it): running without it");
    return undefined;
  }
  // Debian's package, which `npm run setup` installs, starts its own prometheus.service on 9090 on a host
  // with systemd: it scrapes none of our processes, and the system is of use without ours.
  if (!(await isPortFree(port))) {
    log(
      `Prometheus: port ${port} is taken (Debian's prometheus.service? \`sudo systemctl disable --now prometheus\` frees it): running without it`,
    );
    return undefined;
  }
  return startPrometheus({
    config: scrapingSystem(await loadPrometheusConfig(prometheusConfigs.local), ports),
    scrapeInterval: "5s",
    port,
  });
}
