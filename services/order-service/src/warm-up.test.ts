import { createBaseApp } from "@saga/http";
import { createLogger, createMetrics } from "@saga/observability";
import { describe, expect, it } from "vitest";
import { prewarmHttpPath } from "./warm-up.ts";

function countingApp() {
  const metrics = createMetrics("test", "t1");
  const app = createBaseApp({ logger: createLogger("test", "silent"), metrics, ready: async () => {} });
  const seen: string[] = [];
  app.use(async (c, next) => {
    seen.push(`${c.req.method} ${c.req.path} ${c.req.header("x-internal-credential") ?? ""}`);
    await next();
  });
  return { app, metrics, seen };
}

describe("prewarmHttpPath", () => {
  it("sends reads and an order refused by validation each round, with the given headers, counted on no series of the app's", async () => {
    const { app, metrics, seen } = countingApp();
    await prewarmHttpPath(app, {
      headers: { "x-internal-credential": "c" },
      rounds: 8,
      admitsOrders: () => true,
    });
    expect(seen.filter((s) => s.startsWith("GET /orders/")).length).toBe(8);
    expect(seen.filter((s) => s === "GET /orders c").length).toBe(8);
    expect(seen.filter((s) => s === "POST /orders c").length).toBe(8);
    expect(await metrics.registry.getSingleMetricAsString("http_requests_total")).not.toMatch(/status=/);
  });

  it("sends no order while the saga backlog would refuse one", async () => {
    const { app, metrics, seen } = countingApp();
    await prewarmHttpPath(app, { headers: {}, rounds: 4, admitsOrders: () => false });
    expect(seen.filter((s) => s.startsWith("POST")).length).toBe(0);
    expect(seen.length).toBe(8);
  });

  it("leaves a client's request served during the warm-up counted in the HTTP metrics", async () => {
    const { app, metrics } = countingApp();
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The warm-up's requests (they carry its credential) wait until a client's has been served.
    app.use(async (c, next) => {
      if (c.req.header("x-internal-credential") === "warm-up") await held;
      await next();
    });
    const warmUp = prewarmHttpPath(app, {
      headers: { "x-internal-credential": "warm-up" },
      rounds: 4,
      admitsOrders: () => true,
    });
    expect((await app.request("/orders/none")).status).toBe(404);
    release();
    await warmUp;
    const served = await metrics.registry.getSingleMetricAsString("http_requests_total");
    expect(served).toMatch(/http_requests_total\{method="GET",route="unmatched",status="404"[^}]*\} 1$/m);
    expect(served).not.toMatch(/status="400"/);
  });
});
