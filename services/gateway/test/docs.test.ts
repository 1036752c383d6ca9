import { request } from "node:http";
import type { AddressInfo } from "node:net";
import { createOpenApiDocument } from "@saga/contracts/openapi";
import { listen } from "@saga/http";
import { describe, expect, it, onTestFinished } from "vitest";
import { startFakeUpstream, startGateway, USER_ID, user } from "./support.ts";

const noToken = { authorization: "" };

describe("the published document", () => {
  it("serves the OpenAPI document at /openapi.json without a token, outside every lane", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([users], await startFakeUpstream(), {
      // One read at a time and no queue: a document request that took a place would shed the next one.
      ADMISSION_READ_IN_FLIGHT: "1",
      ADMISSION_QUEUE: "0",
    });
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => gateway.app.request("/openapi.json", { headers: noToken })),
    );
    for (const res of responses) {
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(await res.json()).toEqual(createOpenApiDocument());
    }
    expect(users.received).toEqual([]);
  });

  it("serves the interactive reference at /docs without a token, pointing at the document", async () => {
    const gateway = await startGateway([await startFakeUpstream()], await startFakeUpstream());
    const res = await gateway.app.request("/docs", { headers: noToken });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    const page = await res.text();
    expect(page).toContain("/openapi.json");
    expect(page).toContain(
      'src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.76.0/dist/browser/standalone.js"',
    );
  });

  it("loads the reference's script from DOCS_SCRIPT_URL, for browsers that cannot reach the CDN", async () => {
    const gateway = await startGateway([await startFakeUpstream()], await startFakeUpstream(), {
      DOCS_SCRIPT_URL: "/assets/scalar.js",
    });
    const page = await (await gateway.app.request("/docs", { headers: noToken })).text();
    expect(page).toContain('src="/assets/scalar.js"');
    expect(page).not.toContain("cdn.jsdelivr.net");
  });
});

describe("405 Method Not Allowed", () => {
  it.each([
    ["GET", "/users", "POST"],
    ["PUT", `/users/${USER_ID}`, "GET, HEAD"],
    ["PATCH", "/orders", "GET, HEAD, POST"],
    ["POST", `/orders/${USER_ID}`, "DELETE, GET, HEAD"],
    ["DELETE", `/users/${USER_ID}/orders`, "GET, HEAD"],
    ["POST", "/health", "GET, HEAD"],
    ["DELETE", "/openapi.json", "GET, HEAD"],
  ])(
    "answers %s %s with 405, Allow: %s and a JSON error, without a token and without forwarding it",
    async (method, path, allow) => {
      const users = await startFakeUpstream(() => ({ body: user }));
      const orders = await startFakeUpstream();
      const gateway = await startGateway([users], orders);
      const res = await gateway.app.request(path, { method, headers: noToken });
      expect(res.status).toBe(405);
      expect(res.headers.get("allow")).toBe(allow);
      expect(await res.json()).toEqual({
        error: `${method} is not allowed on ${path}; allowed: ${allow}`,
        requestId: res.headers.get("x-request-id"),
      });
      expect([...users.received, ...orders.received]).toEqual([]);
    },
  );

  it("answers TRACE (which fetch cannot send) on a real connection with 405 and Allow", async () => {
    const users = await startFakeUpstream();
    const gateway = await startGateway([users], await startFakeUpstream());
    const server = listen({ app: gateway.app, port: 0 });
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    await new Promise((resolve) => server.once("listening", resolve));
    const { port } = server.address() as AddressInfo;
    const answer = await new Promise<{ status?: number; allow?: string; body: string }>((resolve, reject) => {
      request({ port, host: "127.0.0.1", method: "TRACE", path: "/users" }, (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, allow: res.headers.allow, body }));
      })
        .on("error", reject)
        .end();
    });
    expect(answer).toMatchObject({ status: 405, allow: "POST" });
    expect(JSON.parse(answer.body)).toMatchObject({ error: "TRACE is not allowed on /users; allowed: POST" });
    expect(users.received).toEqual([]);
  });

  it("still answers an unknown path 404, and a supported method as before", async () => {
    const users = await startFakeUpstream(() => ({ body: user }));
    const gateway = await startGateway([users], await startFakeUpstream());
    expect((await gateway.app.request(`/users/${USER_ID}`)).status).toBe(200);
    expect((await gateway.app.request(`/users/${USER_ID}`, { method: "HEAD" })).status).toBe(200);
    expect((await gateway.app.request("/nowhere")).status).toBe(404);
  });
});
