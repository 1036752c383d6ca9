import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { countedOn, httpMetrics, markHeld, metricsHandler } from "./http.ts";
import { createHttpMetrics, createMetrics } from "./metrics.ts";

describe("httpMetrics", () => {
  it("labels requests by route template, never by the raw path", async () => {
    const metrics = createMetrics("test", "test-1");
    const app = new Hono();
    app.use(httpMetrics({ metrics }));
    app.get("/orders/:id", (c) => c.json({ id: c.req.param("id") }));
    app.get("/metrics", metricsHandler({ metrics }));

    await app.request("/orders/3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11");
    await app.request("/orders/another-id");
    await app.request("/no/such/path");
    const text = await (await app.request("/metrics")).text();

    expect(text).toContain(
      'http_requests_total{method="GET",route="/orders/:id",status="200",service="test",instance="test-1"} 2',
    );
    expect(text).toContain(
      'http_requests_total{method="GET",route="unmatched",status="404",service="test",instance="test-1"} 1',
    );
    expect(text).not.toContain("3f1c7a52");
    expect(text).toContain("saga_instance_up");
    expect(text).toContain("process_cpu_seconds_total");
  });

  it("counts a request the process sends itself with countedOn on those series, never the app's", async () => {
    const metrics = createMetrics("test", "test-1");
    const own = createHttpMetrics();
    const app = new Hono();
    app.use(httpMetrics({ metrics }));
    app.get("/orders/:id", (c) => c.json({}));

    await app.request("/orders/1", {}, countedOn(own));
    await app.request("/orders/2");
    const count = async (m: typeof own) => (await m.httpRequests.get()).values.map((v) => v.value);
    expect(await count(metrics)).toEqual([1]);
    expect(await count(own)).toEqual([1]);
  });

  it("times a request marked held on the held histogram alone, and counts it with the others", async () => {
    const metrics = createMetrics("test", "test-1");
    const app = new Hono();
    app.use(httpMetrics({ metrics }));
    app.get("/orders/:id", (c) => {
      if (c.req.header("prefer")) markHeld(c);
      return c.json({});
    });

    await app.request("/orders/1", { headers: { prefer: "wait=5" } });
    await app.request("/orders/2");
    await app.request("/orders/3");
    const counts = async (h: typeof metrics.httpDuration) =>
      (await h.get()).values.filter((v) => v.metricName?.endsWith("_count")).map((v) => v.value);
    expect(await counts(metrics.httpDuration)).toEqual([2]);
    expect(await counts(metrics.httpHeldDuration)).toEqual([1]);
    expect((await metrics.httpRequests.get()).values.map((v) => v.value)).toEqual([3]);
  });
});
