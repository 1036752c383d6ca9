import { createLogger, createMetrics } from "@saga/observability";
import { describe, expect, it } from "vitest";
import type { AdmissionOptions } from "./admission.ts";
import { createBaseApp } from "./app.ts";

function heldApp(limits: Partial<AdmissionOptions["limits"]> = {}, queueTimeoutMs = 50) {
  const metrics = createMetrics("test", "t1");
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics,
    ready: async () => {},
    admission: {
      limits: {
        read: { maxInFlight: 1, maxQueue: 0 },
        write: { maxInFlight: 1, maxQueue: 0 },
        wait: { maxInFlight: 10, maxQueue: 0 },
        ...limits,
      },
      queueTimeoutMs,
      retryAfterS: 2,
    },
  });
  const holds: (() => void)[] = [];
  const hold = () => new Promise<void>((resolve) => holds.push(resolve));
  app.post("/things", async (c) => {
    await hold();
    return c.json({ written: true }, 201);
  });
  app.get("/things/:id", async (c) => {
    if (c.req.query("hold")) await hold();
    return c.json({ id: c.req.param("id") });
  });
  const releaseAll = () => {
    for (const release of holds.splice(0)) release();
  };
  return { app, metrics, releaseAll, holds };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe("admission", () => {
  it("sheds a write past the bound with 503 + Retry-After as JSON, and still serves reads and health", async () => {
    const { app, metrics, releaseAll } = heldApp();
    const first = app.request("/things", { method: "POST" });
    await tick();
    const shed = await app.request("/things", { method: "POST" });
    expect(shed.status).toBe(503);
    expect(shed.headers.get("retry-after")).toBe("2");
    expect(await shed.json()).toMatchObject({
      error: "overloaded: too many requests in flight; retry later",
    });
    // Reads have their own lane; operators' paths none.
    expect((await app.request("/things/a")).status).toBe(200);
    expect((await app.request("/health")).status).toBe(200);
    expect((await app.request("/ready")).status).toBe(200);
    const text = await (await app.request("/metrics")).text();
    expect(text).toMatch(/http_admission_shed_total\{lane="write",[^}]*\} 1/);
    releaseAll();
    expect((await first).status).toBe(201);
  });

  it("never lets polling reads starve writes", async () => {
    const { app, releaseAll } = heldApp();
    const read = app.request("/things/a?hold=1");
    await tick();
    expect((await app.request("/things/b")).status).toBe(503);
    const write = app.request("/things", { method: "POST" });
    await tick();
    releaseAll();
    expect((await write).status).toBe(201);
    expect((await read).status).toBe(200);
  });

  it("admits a queued request when a place frees within the queue timeout", async () => {
    const { app, releaseAll, holds } = heldApp({ write: { maxInFlight: 1, maxQueue: 1 } }, 1000);
    const first = app.request("/things", { method: "POST" });
    await tick();
    const queued = app.request("/things", { method: "POST" });
    await tick();
    expect((await app.request("/things", { method: "POST" })).status).toBe(503);
    releaseAll();
    expect((await first).status).toBe(201);
    while (holds.length === 0) await tick();
    releaseAll();
    expect((await queued).status).toBe(201);
  });

  it("puts long polls (Prefer: wait) in a lane of their own", async () => {
    const { app, releaseAll } = heldApp();
    const read = app.request("/things/a?hold=1");
    await tick();
    const poll = await app.request("/things/b", { headers: { prefer: "wait=5" } });
    expect(poll.status).toBe(200);
    releaseAll();
    await read;
  });
});

describe("adaptive admission (a proxy's lanes)", () => {
  it("lowers a lane's bound while its backend sheds, so the excess is shed here, and raises it again", async () => {
    const app = createBaseApp({
      logger: createLogger("test", "silent"),
      metrics: createMetrics("test", "t1"),
      ready: async () => {},
      admission: {
        limits: {
          read: { maxInFlight: 10, maxQueue: 0 },
          write: { maxInFlight: 10, maxQueue: 0 },
          wait: { maxInFlight: 10, maxQueue: 0 },
        },
        queueTimeoutMs: 50,
        retryAfterS: 1,
        adaptive: { minInFlight: 1 },
      },
    });
    let backendSheds = true;
    const holds: (() => void)[] = [];
    app.post("/backend", async (c) => {
      if (c.req.query("hold")) await new Promise<void>((resolve) => holds.push(resolve));
      if (backendSheds) return c.json({ error: "backend sheds" }, 503, { "retry-after": "1" });
      return c.json({ ok: true }, 201);
    });
    const post = (query = "") => app.request(`/backend${query}`, { method: "POST" });
    for (let i = 0; i < 30; i++) expect(await (await post()).json()).toEqual({ error: "backend sheds" });
    // The bound is down to 1: with one request in flight the next is shed here.
    const held = post("?hold=1");
    await tick();
    const local = await post();
    expect(local.status).toBe(503);
    expect(await local.json()).toMatchObject({ error: expect.stringMatching(/^overloaded/) });
    backendSheds = false;
    for (const release of holds.splice(0)) release();
    expect((await held).status).toBe(201);
    // Answers on time raise it again: two at once are admitted after a few.
    for (let i = 0; i < 5; i++) expect((await post()).status).toBe(201);
    const both = [post("?hold=1"), post("?hold=1")];
    await tick();
    for (const release of holds.splice(0)) release();
    expect((await Promise.all(both)).map((r) => r.status)).toEqual([201, 201]);
  });
});
