import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createGateway, mintToken, parseGatewayEnv } from "@saga/gateway";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkDashboards, formatReport } from "../src/check.ts";
import { loadDashboards } from "../src/dashboards.ts";
import {
  configForTargets,
  hasPrometheus,
  type PrometheusServer,
  startPrometheus,
} from "../src/prometheus.ts";

// The dashboards' queries on a real Prometheus that scrapes a real gateway in front of stand-in
// upstreams: the whole *Services* dashboard must return series. The full system (services, relays)
// is checked with `npm run check-dashboards` (see monitoring/README.md).

const USER_ID = "3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11";
const SECRET = "dashboards-test-secret-of-at-least-32-characters";
const dashboards = loadDashboards();

function listen(server: Server): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    ),
  );
}

/** A stand-in service instance: `/health`, a user, its (empty) orders, and 404 for anything else. */
function fakeService(): Server {
  return createServer((req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.url === "/health") return json(200, { status: "UP" });
    if (req.url === `/users/${USER_ID}`)
      return json(200, { id: USER_ID, username: "ada", balance: 1, createdAt: new Date().toISOString() });
    if (req.url === `/orders?userId=${USER_ID}`) return json(200, []);
    return json(404, { error: "not found" });
  });
}

describe.runIf(hasPrometheus() || process.env.CI)("dashboard queries against a running gateway", () => {
  const upstreams = [fakeService(), fakeService(), fakeService()];
  let gatewayServer: Server;
  let metricsServer: Server;
  let gateway: ReturnType<typeof createGateway>;
  let gatewayUrl: string;
  let prometheus: PrometheusServer;

  beforeAll(async () => {
    const [one, two, orders] = await Promise.all(upstreams.map(listen));
    gateway = createGateway(
      parseGatewayEnv({
        USER_SERVICE_URLS: `${one},${two}`,
        ORDER_SERVICE_URLS: orders,
        HEALTH_INTERVAL_MS: "200",
        MAX_BODY_BYTES: "1024",
        INSTANCE_ID: "gateway-dashboards",
        LOG_LEVEL: "silent",
        AUTH_SECRET: SECRET,
        INTERNAL_SECRET: SECRET,
      }),
    );
    await gateway.start();
    gatewayServer = serve({ fetch: gateway.app.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    await new Promise((resolve) => gatewayServer.once("listening", resolve));
    gatewayUrl = `http://127.0.0.1:${(gatewayServer.address() as AddressInfo).port}`;
    // Prometheus scrapes the gateway's internal metrics app, as in production.
    metricsServer = serve({ fetch: gateway.metricsApp.fetch, port: 0, hostname: "127.0.0.1" }) as Server;
    await new Promise((resolve) => metricsServer.once("listening", resolve));
    prometheus = await startPrometheus({
      config: configForTargets({ gateway: [`127.0.0.1:${(metricsServer.address() as AddressInfo).port}`] }),
    });
    await prometheus.waitForScrapes(1);

    // Traffic of every kind the panels show: 2xx, 4xx, 413, a held read, and 5xx once order-service is gone.
    const token = await mintToken({ secret: SECRET, subject: "dashboards", role: "admin" });
    const send = (path: string, init?: RequestInit) =>
      fetch(`${gatewayUrl}${path}`, {
        ...init,
        headers: { ...(init?.headers as Record<string, string>), authorization: `Bearer ${token}` },
      }).then((r) => r.text());
    for (let i = 0; i < 5; i++) await send(`/users/${USER_ID}`);
    await send(`/users/${USER_ID}/orders`);
    await send("/users/00000000-0000-4000-8000-000000000000");
    await send("/orders", { method: "POST", body: "x".repeat(2048) });
    // Asked to be held (the stand-in answers at once): timed on the held reads' histograms.
    await send(`/orders/${USER_ID}`, { headers: { prefer: "wait=1" } });
    const orderService = upstreams[2] as Server;
    await new Promise((resolve) => {
      orderService.close(resolve);
      orderService.closeAllConnections();
    });
    await send(`/orders/${USER_ID}`);
    await send(`/users/${USER_ID}/orders`);
    await prometheus.waitForScrapes(3);
  });

  afterAll(async () => {
    await prometheus?.stop();
    metricsServer?.closeAllConnections();
    metricsServer?.close();
    gatewayServer?.closeAllConnections();
    await new Promise((resolve) => (gatewayServer ? gatewayServer.close(resolve) : resolve(undefined)));
    await gateway?.stop();
    for (const server of upstreams) server.closeAllConnections();
    await Promise.all(
      upstreams.map((s) => new Promise((resolve) => (s.listening ? s.close(resolve) : resolve(undefined)))),
    );
  });

  it("every query of the Services dashboard returns series", async () => {
    const report = await checkDashboards(prometheus, [
      dashboards.get("services.json") as NonNullable<ReturnType<typeof dashboards.get>>,
    ]);
    expect(report.ok, formatReport(report)).toBe(true);
    expect(report.queries.length).toBeGreaterThan(15);
  });

  it("shows what the gateway saw: both user-service instances healthy, order-service ejected, 5xx counted", async () => {
    const healthy = await prometheus.query("sum by (upstream) (gateway_upstream_healthy_instances)");
    expect(Object.fromEntries(healthy.map((s) => [s.metric.upstream, s.value[1]]))).toEqual({
      "user-service": "2",
      "order-service": "0",
    });
    const errors = await prometheus.query('sum(http_requests_total{service="gateway",status=~"5.."})');
    expect(Number(errors[0]?.value[1])).toBeGreaterThanOrEqual(2);
    const instance = await prometheus.query('saga_instance_up{service="gateway"}');
    expect(instance[0]?.metric.instance).toBe("gateway-dashboards");
  });

  it("catches a metric that no target exports, even behind `or vector(0)`", async () => {
    // Nothing here exports the relay, consumer and saga metrics: the check must say so, by name.
    const report = await checkDashboards(prometheus, [
      dashboards.get("saga-relay.json") as NonNullable<ReturnType<typeof dashboards.get>>,
    ]);
    expect(report.ok).toBe(false);
    expect(report.missingNames).toEqual(
      expect.arrayContaining(["saga_relay_outbox_backlog", "saga_dlq_events_total", "saga_outcomes_total"]),
    );
    expect(
      report.queries.find((q) => q.expr.startsWith("max by (outbox) (saga_relay_outbox_backlog)"))?.series,
    ).toBe(0);
  });
});
