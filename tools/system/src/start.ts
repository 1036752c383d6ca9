import {
  hasPrometheus,
  loadPrometheusConfig,
  type PrometheusServer,
  prometheusConfigs,
  startPrometheus,
} from "@saga/monitoring";
import { createPrefixedOutput } from "./stack/log-lines.ts";
import { DEFAULT_PORTS, startSystem } from "./stack/system.ts";

// `npm start`: the whole system on the ports of docs/design.md, until Ctrl-C.
async function run() {
  const names = ["gateway", "user-1", "user-2", "order", "relay-1", "relay-2", "system"];
  const output = createPrefixedOutput(names);
  const log = (line: string) => output("system", line);
  // The gateway in AUTH_DEV_MODE: tokens signed with the public development key (`npm run token`).
  const system = await startSystem({ ports: DEFAULT_PORTS, output, log, restartOnExit: true, devAuth: true });
  const adminToken = await system.token("admin", { admin: true, ttlSeconds: 12 * 3600 });
  let prometheus: PrometheusServer | undefined;
  if (hasPrometheus()) {
    prometheus = await startPrometheus({
      config: await loadPrometheusConfig(prometheusConfigs.local),
      scrapeInterval: "5s",
      port: 9090,
    });
  } else log("Prometheus is not installed (npm run setup installs it): running without it");

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping every process`);
    await prometheus?.stop();
    await system.stop();
    log("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));

  const p = system.ports;
  console.log(`
The system is up. Ctrl-C stops everything.

  gateway         http://127.0.0.1:${p.gateway}        (the API: /users, /orders; a bearer token on every request)
  gateway metrics http://127.0.0.1:${p.gatewayMetrics}/metrics
  user-service    ${p.users.map((x) => `http://127.0.0.1:${x}`).join("  ")}   (only through the gateway)
  order-service   http://127.0.0.1:${p.order}   (only through the gateway)
  relay metrics   ${p.relays.map((x) => `http://127.0.0.1:${x}/metrics`).join("  ")}
  PostgreSQL      ${system.userDbUrl}
                  ${system.orderDbUrl}
  Kafka           ${system.kafkaBrokers.join(",")}
  Prometheus      ${prometheus ? prometheus.url : "not running"}

Development mode (AUTH_DEV_MODE): the gateway accepts tokens signed with the public development key.
An admin's token, valid 12 hours (it may create users):

  export ADMIN_TOKEN=${adminToken}

A user's token, once the admin has created the user: npm run --silent token -- --user <user id>
`);
}

run().catch((err) => {
  console.error(err);
  process.exit(1);
});
