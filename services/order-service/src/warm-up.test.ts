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
  it("sends reads and an order refused by validation each round, with the given headers, then resets the HTTP metrics", async () => {
    const { app, metrics, seen } = countingApp();
    await prewarmHttpPath(app, {
      headers: { "x-internal-credential": "c" },
      rounds: 8,
      metrics,
      admitsOrders: () => true,
    });
    expect(seen.filter((s) => s.startsWith("GET /orders/")).length).toBe(8);
    expect(seen.filter((s) => s === "GET /orders c").length).toBe(8);
    expect(seen.filter((s) => s === "POST /orders c").length).toBe(8);
    expect(await metrics.registry.getSingleMetricAsString("http_requests_total")).not.toMatch(/status=/);
  });

  it("sends no order while the saga backlog would refuse one", async () => {
    const { app, metrics, seen } = countingApp();
    await prewarmHttpPath(app, { headers: {}, rounds: 4, metrics, admitsOrders: () => false });
    expect(seen.filter((s) => s.startsWith("POST")).length).toBe(0);
    expect(seen.length).toBe(8);
  });
});
