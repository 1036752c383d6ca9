import { describe, expect, it } from "vitest";
import { parseGatewayEnv } from "./env.ts";

describe("parseGatewayEnv", () => {
  it("reads the upstreams and applies the defaults", () => {
    const env = parseGatewayEnv({
      USER_SERVICE_URLS: " http://127.0.0.1:8081, http://127.0.0.1:8082/ ",
      ORDER_SERVICE_URLS: "http://order-service-1:8091, http://order-service-2:8092/",
    });
    expect(env).toMatchObject({
      PORT: 8080,
      USER_SERVICE_URLS: ["http://127.0.0.1:8081", "http://127.0.0.1:8082"],
      ORDER_SERVICE_URLS: ["http://order-service-1:8091", "http://order-service-2:8092"],
      UPSTREAM_TIMEOUT_MS: 5000,
      HEALTH_INTERVAL_MS: 1000,
      HEALTH_PATH: "/health",
      MAX_BODY_BYTES: 65536,
      UPSTREAM_MAX_RESPONSE_BYTES: 4 * 1024 * 1024,
    });
  });

  it("takes ORDER_SERVICE_URL, as before ORDER_SERVICE_URLS, for one order-service instance", () => {
    const env = parseGatewayEnv({
      USER_SERVICE_URLS: "http://127.0.0.1:8081",
      ORDER_SERVICE_URL: "http://order-service:8091",
    });
    expect(env.ORDER_SERVICE_URLS).toEqual(["http://order-service:8091"]);
    expect(env).not.toHaveProperty("ORDER_SERVICE_URL");
  });

  // Compose's `${VAR}` of an unset VAR, an empty Helm value and a `VAR=` line all pass "".
  it("reads an empty variable as unset: its default applies", () => {
    const env = parseGatewayEnv({
      USER_SERVICE_URLS: "http://127.0.0.1:8081",
      ORDER_SERVICE_URLS: "http://127.0.0.1:8091",
      AUTH_CLOCK_SKEW_S: "",
      ADMISSION_QUEUE: "",
      PORT: "",
      METRICS_PORT: "",
      ORDER_SERVICE_URL: "",
    });
    expect(env).toMatchObject({ AUTH_CLOCK_SKEW_S: 30, ADMISSION_QUEUE: 64, PORT: 8080, METRICS_PORT: 9480 });
  });

  it.each([
    [{ ORDER_SERVICE_URLS: "http://127.0.0.1:8091" }, /USER_SERVICE_URLS/],
    [
      { USER_SERVICE_URLS: "", ORDER_SERVICE_URLS: "http://127.0.0.1:8091" },
      /USER_SERVICE_URLS: required \(unset or empty\)/,
    ],
    [
      { USER_SERVICE_URLS: " , ", ORDER_SERVICE_URLS: "http://127.0.0.1:8091" },
      /USER_SERVICE_URLS: must name at least one user-service instance/,
    ],
    [
      { USER_SERVICE_URLS: "127.0.0.1:8081", ORDER_SERVICE_URLS: "http://127.0.0.1:8091" },
      /USER_SERVICE_URLS\.0: must be an http:\/\/ origin/,
    ],
    [
      { USER_SERVICE_URLS: "http://127.0.0.1:8081", ORDER_SERVICE_URLS: " , " },
      /ORDER_SERVICE_URLS: must name at least one order-service instance/,
    ],
    [
      {
        USER_SERVICE_URLS: "http://127.0.0.1:8081",
        ORDER_SERVICE_URLS: "http://127.0.0.1:8091,http://127.0.0.1:8092/api",
      },
      /ORDER_SERVICE_URLS\.1: must be an http:\/\/ origin/,
    ],
    [
      { USER_SERVICE_URLS: "http://127.0.0.1:8081", ORDER_SERVICE_URL: "http://127.0.0.1:8091/api" },
      /ORDER_SERVICE_URL: must be an http/,
    ],
    [
      { USER_SERVICE_URLS: "http://127.0.0.1:8081" },
      /ORDER_SERVICE_URLS: required: the order-service instances, comma-separated \(or ORDER_SERVICE_URL for one\)/,
    ],
    [
      {
        USER_SERVICE_URLS: "http://127.0.0.1:8081",
        ORDER_SERVICE_URLS: "http://127.0.0.1:8091,http://127.0.0.1:8092",
        ORDER_SERVICE_URL: "http://127.0.0.1:8091",
      },
      /ORDER_SERVICE_URLS: give ORDER_SERVICE_URLS or ORDER_SERVICE_URL \(its one-instance alias\), not both/,
    ],
    [
      { USER_SERVICE_URLS: "http://a:1", ORDER_SERVICE_URLS: "http://b:2", UPSTREAM_TIMEOUT_MS: "0" },
      /UPSTREAM_TIMEOUT_MS/,
    ],
    // Past 2^31-1 ms a Node timer fires after 1 ms: every proxied request would be a 504 at once.
    [
      {
        USER_SERVICE_URLS: "http://a:1",
        ORDER_SERVICE_URLS: "http://b:2",
        UPSTREAM_TIMEOUT_MS: "3000000000",
      },
      /UPSTREAM_TIMEOUT_MS: must be at most 2147453647/,
    ],
    // A read held by `Prefer: wait=30` is timed for UPSTREAM_TIMEOUT_MS + 30 s: that sum must stay a timer's.
    [
      {
        USER_SERVICE_URLS: "http://a:1",
        ORDER_SERVICE_URLS: "http://b:2",
        UPSTREAM_TIMEOUT_MS: "2147483647",
      },
      /UPSTREAM_TIMEOUT_MS: must be at most 2147453647 \(a read held by Prefer: wait waits up to 30000 ms longer, on a Node\.js timer\)/,
    ],
  ])("fails with the variable's name: %j", (source, message) => {
    expect(() => parseGatewayEnv(source)).toThrow(message);
  });
});
