import { INTERNAL_CREDENTIAL_HEADER, SUBJECT_HEADER } from "@saga/contracts";
import { createLogger, createMetrics } from "@saga/observability";
import { describe, expect, it } from "vitest";
import { createBaseApp } from "./app.ts";
import { callerSubject } from "./internal-credential.ts";

const SECRET = "s".repeat(40);

function testApp(internalSecret?: string) {
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics: createMetrics("test", "t1"),
    ready: async () => {},
    internalSecret,
  });
  app.get("/things", (c) => c.json({ subject: callerSubject(c) }));
  return app;
}

describe("internalCredential", () => {
  it("answers the API only with the gateway's credential", async () => {
    const app = testApp(SECRET);
    const ok = await app.request("/things", {
      headers: { [INTERNAL_CREDENTIAL_HEADER]: SECRET, [SUBJECT_HEADER]: "user-1" },
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ subject: "user-1" });

    for (const headers of [
      {},
      { [INTERNAL_CREDENTIAL_HEADER]: "wrong" },
      { [INTERNAL_CREDENTIAL_HEADER]: "" },
    ]) {
      const refused = await app.request("/things", { headers });
      expect(refused.status).toBe(401);
      expect(await refused.json()).toMatchObject({ error: "this service answers only the gateway" });
    }
  });

  it("leaves the probes and the metrics open, but refuses them a wrong credential", async () => {
    const app = testApp(SECRET);
    for (const path of ["/health", "/ready", "/metrics"]) {
      expect((await app.request(path)).status).toBe(200);
      const right = { headers: { [INTERNAL_CREDENTIAL_HEADER]: SECRET } };
      expect((await app.request(path, right)).status).toBe(200);
      // The gateway's health checks carry its credential: one with another secret is told so.
      const wrong = await app.request(path, { headers: { [INTERNAL_CREDENTIAL_HEADER]: "wrong" } });
      expect(wrong.status, path).toBe(401);
      expect(await wrong.json()).toMatchObject({ error: "this service answers only the gateway" });
    }
  });

  it("checks nothing without a secret (development mode)", async () => {
    const res = await testApp().request("/things");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ subject: "" });
  });
});
