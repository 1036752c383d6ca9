import { createLogger, createMetrics } from "@saga/observability";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { createBaseApp } from "./app.ts";
import { AppError } from "./errors.ts";
import { parseJsonBody, uuidParam } from "./validate.ts";

function testApp(ready: () => Promise<void> = async () => {}) {
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics: createMetrics("test", "t1"),
    ready,
    maxBodyBytes: 1024,
    mapError: (err) =>
      err.message === "connection lost" ? new AppError("UNAVAILABLE", "database unavailable") : undefined,
  });
  app.post("/things", async (c) => c.json(await parseJsonBody(c, z.object({ n: z.number().int() })), 201));
  app.get("/things/:id", (c) => c.json({ id: uuidParam(c, "id") }));
  app.get("/boom", () => {
    throw new Error("secret internals");
  });
  app.get("/db", () => {
    throw new Error("connection lost");
  });
  return app;
}

const post = (body: string) => ({ method: "POST", body, headers: { "content-type": "application/json" } });

describe("createBaseApp", () => {
  it("answers a valid request", async () => {
    const res = await testApp().request("/things", post('{"n":3}'));
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ n: 3 });
  });

  it.each([
    ["malformed JSON", '{"n":', 400, /not valid JSON/],
    ["a wrong type", '{"n":"3"}', 400, /^n: Invalid input: expected number, received string$/],
    ["a missing field", "{}", 400, /^n: Invalid input: expected number, received undefined$/],
    ["a value two checks refuse, once", '{"n":1e300}', 400, /^n: Too big: expected int to be <=\d+$/],
    ["a body of the wrong shape", "[]", 400, /^body: Invalid input: expected object, received array$/],
    ["an oversized body", JSON.stringify({ n: 1, pad: "x".repeat(2000) }), 413, /larger than 1024 bytes/],
  ])("rejects %s with a JSON error", async (_what, body, status, error) => {
    const res = await testApp().request("/things", post(body));
    expect(res.status).toBe(status);
    expect(await res.json()).toMatchObject({ error: expect.stringMatching(error) });
  });

  it("rejects a bad UUID and an unknown route", async () => {
    const bad = await testApp().request("/things/42");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: "id must be a UUID" });
    const none = await testApp().request("/nowhere");
    expect(none.status).toBe(404);
    expect(await none.json()).toMatchObject({ error: "no route for GET /nowhere" });
  });

  it("reads a JSON body with a JSON media type or none, and answers 415 to any other", async () => {
    const app = testApp();
    const send = (headers: Record<string, string>) =>
      // Bytes, to which fetch adds no Content-Type of its own (a string gets text/plain).
      app.request("/things", { method: "POST", body: new TextEncoder().encode('{"n":3}'), headers });
    expect((await send({ "content-type": "application/json; charset=utf-8" })).status).toBe(201);
    expect((await send({ "content-type": "application/merge-patch+json" })).status).toBe(201);
    expect((await send({})).status).toBe(201);
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]) {
      const res = await send({ "content-type": type });
      expect(res.status).toBe(415);
      expect(await res.json()).toMatchObject({ error: "Content-Type must be application/json" });
    }
  });

  it("answers a known path asked with a method it does not serve 405 with Allow", async () => {
    const app = testApp();
    const put = await app.request("/things/42", { method: "PUT", headers: { "x-request-id": "r-1" } });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("GET, HEAD");
    expect(await put.json()).toEqual({
      error: "PUT is not allowed on /things/42; allowed: GET, HEAD",
      requestId: "r-1",
    });
    const get = await app.request("/things");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    const health = await app.request("/health", { method: "DELETE" });
    expect(health.status).toBe(405);
    expect(health.headers.get("allow")).toBe("GET, HEAD");
  });

  it("answers a path with a trailing slash 404, as any unknown path, whatever the method", async () => {
    const app = testApp();
    const id = "0b9f3c5e-2a4d-4e6f-8a1b-3c5d7e9f1a2b";
    for (const [method, path] of [
      ["GET", `/things/${id}/`],
      ["POST", "/things/"],
      ["PUT", `/things/${id}/`],
    ] as const) {
      const res = await app.request(path, { method });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.headers.get("allow")).toBeNull();
      expect(await res.json()).toMatchObject({ error: `no route for ${method} ${path}` });
    }
    // The path itself, with a method it does not serve, is still a 405.
    const wrong = await app.request(`/things/${id}`, { method: "DELETE" });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("GET, HEAD");
  });

  it("hides the internals of an unexpected error and maps known ones", async () => {
    const res = await testApp().request("/boom", { headers: { "x-request-id": "req-123" } });
    expect(res.status).toBe(500);
    expect(res.headers.get("x-request-id")).toBe("req-123");
    expect(await res.json()).toEqual({ error: "internal error", requestId: "req-123" });
    const mapped = await testApp().request("/db");
    expect(mapped.status).toBe(503);
    expect(await mapped.json()).toMatchObject({ error: "database unavailable" });
  });

  it("logs an error with its request's id and trace id, and only the trace id of the traceparent", async () => {
    const logged: Record<string, unknown>[] = [];
    const app = createBaseApp({
      logger: createLogger("test", "warn", {
        destination: { write: (line: string) => void logged.push(JSON.parse(line)) },
      }),
      metrics: createMetrics("test", "t1"),
      ready: async () => {},
      mapError: (err) =>
        err.message === "connection lost" ? new AppError("UNAVAILABLE", "database unavailable") : undefined,
    });
    app.get("/boom", () => {
      throw new Error("secret internals");
    });
    app.get("/db", () => {
      throw new Error("connection lost");
    });
    // Another failure: the same one again would be counted into the first line's repeats.
    app.get("/other", () => {
      throw new Error("another defect");
    });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    await app.request("/boom", { headers: { "x-request-id": "req-1", traceparent } });
    await app.request("/db", { headers: { "x-request-id": "req-2", traceparent } });
    await app.request("/other", { headers: { "x-request-id": "req-3", traceparent: "garbage" } });
    expect(logged.map((l) => [l.msg, l.requestId, l.traceId])).toEqual([
      ["unhandled error", "req-1", "4bf92f3577b34da6a3ce929d0e0e4736"],
      ["database unavailable", "req-2", "4bf92f3577b34da6a3ce929d0e0e4736"],
      ["unhandled error", "req-3", undefined],
    ]);
  });

  it("reports liveness always and readiness from its dependencies", async () => {
    const app = testApp(async () => {
      throw new Error("kafka unreachable");
    });
    expect(await (await app.request("/health")).json()).toEqual({ status: "UP" });
    const ready = await app.request("/ready");
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: "DOWN", error: "kafka unreachable" });
  });
});
