import { describe, expect, it } from "vitest";
import { parseOrderServiceEnv } from "./env.ts";

const base = { DATABASE_URL: "postgres://localhost/order_db", KAFKA_BROKERS: "localhost:9092" };

describe("SAGA_TIMEOUT", () => {
  it("defaults to 60 s and reads a duration with or without its unit (seconds)", () => {
    expect(parseOrderServiceEnv(base).SAGA_TIMEOUT).toBe(60_000);
    for (const [text, ms] of [
      ["90s", 90_000],
      ["1500ms", 1500],
      ["5m", 300_000],
      ["1h", 3_600_000],
      ["30", 30_000],
      ["1.5s", 1500],
      ["1s", 1000],
    ] as const)
      expect(parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: text }).SAGA_TIMEOUT, text).toBe(ms);
  });

  it("is 60 s when empty, as when unset (Compose's `${SAGA_TIMEOUT}` of an unset variable)", () => {
    expect(parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: "", SAGA_TARGET_MS: "" })).toMatchObject({
      SAGA_TIMEOUT: 60_000,
      SAGA_TARGET_MS: 500,
    });
  });

  it.each(["0s", "-5s", "1d", "soon", "5 m"])("refuses %j, naming the variable", (text) => {
    expect(() => parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: text })).toThrow(/SAGA_TIMEOUT/);
  });

  // A deadline that short would cancel sagas that are only slow, not stopped: every order, in the worst case.
  it.each(["0.5ms", "0.5s", "999ms"])("refuses %j: less than a second", (text) => {
    expect(() => parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: text })).toThrow(
      /SAGA_TIMEOUT: must be at least 1s/,
    );
  });

  it("refuses a deadline within SAGA_TARGET_MS, the time the backlog bound keeps an accepted saga within", () => {
    expect(() => parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: "2s", SAGA_TARGET_MS: "2000" })).toThrow(
      /SAGA_TIMEOUT: must be longer than SAGA_TARGET_MS/,
    );
    expect(parseOrderServiceEnv({ ...base, SAGA_TIMEOUT: "3s", SAGA_TARGET_MS: "2000" }).SAGA_TIMEOUT).toBe(
      3000,
    );
  });
});

describe("the order-service's durations", () => {
  // Past 2^31-1 ms a Node timer fires after 1 ms: the sweep would run without a pause.
  it.each([
    [{ SAGA_SWEEP_INTERVAL_MS: "2147483648" }, /SAGA_SWEEP_INTERVAL_MS: must be at most 2147483647/],
    [{ SAGA_TIMEOUT: "1000000h" }, /SAGA_TIMEOUT: must be at most 2147483647/],
  ])("refuse one longer than a timer waits: %o", (bad, message) => {
    expect(() => parseOrderServiceEnv({ ...base, ...bad })).toThrow(message);
  });
});
