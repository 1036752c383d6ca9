import { defineCli } from "@saga/tools/cli";
import { setUp } from "@saga/tools/setup";
import { linkedProcesses, orderServicesOption } from "./stack/links.ts";
import { type LocalSystem, PROMETHEUS_PORT, startLocalSystem } from "./stack/local-system.ts";
import { createPrefixedOutput } from "./stack/log-lines.ts";
import { defaultPorts } from "./stack/system.ts";

const startCli = defineCli({
  name: "start",
  command: "npm start --",
  about:
    "The whole system on the ports of docs/design.md, built as production runs it, with Prometheus, until\n" +
    "Ctrl-C; it prints the URLs and an admin's token. `npm run setup` runs first (skipping what is there).",
  options: {
    "order-services": {
      type: "string",
      value: "N",
      default: "1",
      description: "order-service instances behind the gateway, on 8091, 8092…",
    },
  },
});

// `npm start`: the whole system on the ports of docs/design.md, until Ctrl-C.
async function run(): Promise<number> {
  const orderServices = startCli.parseOrExit(process.argv.slice(2), ({ values }) =>
    orderServicesOption(values["order-services"]),
  );
  // Here rather than in a prestart script, which npm runs before this one sees `--help`.
  await setUp();
  const ports = defaultPorts(orderServices);
  const names = ["gateway", ...linkedProcesses(orderServices), "system"];
  const output = createPrefixedOutput(names);
  const log = (line: string) => output("system", line);

  // From the first moment, not once the system is up: a Ctrl-C during the start stops what has started,
  // in order, and waits for it, so that the next `npm start` finds the ports free. Every process runs in
  // a process group of its own, so the terminal's Ctrl-C reaches only this one.
  const stopAsked = new AbortController();
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      // The terminal is gone: a write to it fails (EIO), and the stream's error would end this process
      // at once, with nothing stopped in order. What is left to say goes nowhere.
      if (signal === "SIGHUP") for (const out of [process.stdout, process.stderr]) out.on("error", () => {});
      // Once is enough: a terminal's Ctrl-C comes twice (to this process, and passed on by node24.mjs), and
      // the stop goes on in order, each process within its grace period, whatever comes after.
      if (stopAsked.signal.aborted) return;
      log(`${signal}: stopping every process`);
      stopAsked.abort(new Error(`stopped by ${signal}`));
      resolve();
    };
    // SIGHUP: the terminal was closed (node24.mjs passes it on too), which would otherwise end this at once.
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
  });

  let local: LocalSystem;
  try {
    local = await startLocalSystem({
      ports,
      output,
      log,
      restartOnExit: true,
      // The gateway in AUTH_DEV_MODE: tokens signed with the public development key (`npm run token`).
      devAuth: true,
      prometheusPort: PROMETHEUS_PORT,
      signal: stopAsked.signal,
    });
  } catch (err) {
    // What had started is stopped already, whether the start was asked to stop or failed.
    if (!stopAsked.signal.aborted) throw err;
    log("stopped");
    return 0;
  }

  try {
    const { system, prometheus } = local;
    const adminToken = await system.token("admin", { admin: true, ttlSeconds: 12 * 3600 });
    const p = system.ports;
    if (!stopAsked.signal.aborted)
      console.log(`
The system is up. Ctrl-C stops everything.

  gateway         http://127.0.0.1:${p.gateway}        (the API: /users, /orders; a bearer token on every request)
  gateway metrics http://127.0.0.1:${p.gatewayMetrics}/metrics
  user-service    ${p.users.map((x) => `http://127.0.0.1:${x}`).join("  ")}   (only through the gateway)
  order-service   ${p.orders.map((x) => `http://127.0.0.1:${x}`).join("  ")}   (only through the gateway)
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
    await stopped;
    return 0;
  } finally {
    // On an error too: every process stopped, in order, before this one exits.
    await local.stop();
    log("stopped");
  }
}

run().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
