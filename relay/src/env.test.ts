import { describe, expect, it } from "vitest";
import { outboxesOf, parseRelayEnv } from "./env.ts";

const minimal = { ORDER_DB_URL: "postgres://localhost/order_db", KAFKA_BROKERS: "localhost:9092" };

describe("parseRelayEnv", () => {
  it("fills in the defaults", () => {
    const env = parseRelayEnv(minimal);
    expect(env).toMatchObject({
      PORT: 9400,
      KAFKA_BROKERS: ["localhost:9092"],
      KAFKA_TOPIC_PREFIX: "",
      KAFKA_CLIENT: "platformatic",
      RELAY_MODE: "cdc",
      RELAY_BATCH_SIZE: 500,
      RELAY_MARK_CHUNK_SIZE: 250,
      RELAY_MARK_INTERVAL_MS: 250,
      RELAY_LINGER_MS: 10,
      RELAY_LINGER_ROWS: 16,
      RELAY_SLOT_HOLD_MS: 30_000,
      RELAY_SEND_STALL_MS: 30_000,
      RELAY_POLL_INTERVAL_MS: 1000,
      OUTBOX_RETENTION_SECONDS: 3600,
      LOG_LEVEL: "info",
    });
    expect(env.RELAY_TEST_CRASH_AT).toBeUndefined();
    expect(outboxesOf(env)).toEqual([{ name: "order", url: "postgres://localhost/order_db" }]);
  });

  it("tails both outboxes when both are given", () => {
    const env = parseRelayEnv({ ...minimal, USER_DB_URL: "postgresql://localhost/user_db" });
    expect(outboxesOf(env).map((o) => o.name)).toEqual(["user", "order"]);
  });

  it("fails naming the variable", () => {
    expect(() => parseRelayEnv({ KAFKA_BROKERS: "localhost:9092" })).toThrow(
      /USER_DB_URL: set USER_DB_URL, ORDER_DB_URL or both/,
    );
    expect(() => parseRelayEnv({ ...minimal, KAFKA_BROKERS: "localhost" })).toThrow(
      /KAFKA_BROKERS.*host:port/,
    );
    expect(() => parseRelayEnv({ ...minimal, RELAY_BATCH_SIZE: "0" })).toThrow(/RELAY_BATCH_SIZE/);
    // Past 2^31-1 ms a Node timer fires after 1 ms: the safety-net poll would spin.
    expect(() => parseRelayEnv({ ...minimal, RELAY_POLL_INTERVAL_MS: "2147483648" })).toThrow(
      /RELAY_POLL_INTERVAL_MS: must be at most 2147483647/,
    );
    expect(() => parseRelayEnv({ ...minimal, ORDER_DB_URL: "mysql://x" })).toThrow(
      /ORDER_DB_URL: must be a postgres/,
    );
    expect(() => parseRelayEnv({ ...minimal, RELAY_TEST_CRASH_AT: "later" })).toThrow(/RELAY_TEST_CRASH_AT/);
    expect(() => parseRelayEnv({ ...minimal, KAFKA_CLIENT: "librdkafka" })).toThrow(/KAFKA_CLIENT/);
    expect(parseRelayEnv({ ...minimal, KAFKA_BROKERS: "[::1]:9092" }).KAFKA_BROKERS).toEqual(["[::1]:9092"]);
    expect(() => parseRelayEnv({ ...minimal, KAFKA_BROKERS: "[::1]:9092", KAFKA_CLIENT: "kafkajs" })).toThrow(
      /KAFKA_BROKERS: kafkajs cannot reach an IPv6 address/,
    );
    expect(parseRelayEnv({ ...minimal, KAFKA_CLIENT: "kafkajs" }).KAFKA_CLIENT).toBe("kafkajs");
    expect(() => parseRelayEnv({ ...minimal, OUTBOX_RETENTION_SECONDS: "-1" })).toThrow(
      /OUTBOX_RETENTION_SECONDS/,
    );
    expect(() =>
      parseRelayEnv({ ...minimal, RELAY_SLOT_HOLD_MS: "1000", RELAY_MARK_INTERVAL_MS: "1000" }),
    ).toThrow(/RELAY_SLOT_HOLD_MS: must be longer than RELAY_MARK_INTERVAL_MS/);
    // The default statement bound is 10 s + 2 s.
    expect(() => parseRelayEnv({ ...minimal, RELAY_SEND_STALL_MS: "12000" })).toThrow(
      /RELAY_SEND_STALL_MS: must be longer than DB_STATEMENT_TIMEOUT_MS \+ 2000/,
    );
    expect(
      parseRelayEnv({ ...minimal, RELAY_SEND_STALL_MS: "5000", DB_STATEMENT_TIMEOUT_MS: "2000" })
        .RELAY_SEND_STALL_MS,
    ).toBe(5000);
  });

  // Compose's `${VAR}` of an unset VAR, an empty Helm value and a `VAR=` line all pass "": read as 0, a
  // retention of "" deleted every row at publication and the session bounds were none.
  it("reads an empty variable as unset: its default applies", () => {
    expect(
      parseRelayEnv({
        ...minimal,
        OUTBOX_RETENTION_SECONDS: "",
        DB_STATEMENT_TIMEOUT_MS: "",
        DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "",
        RELAY_MARK_INTERVAL_MS: "",
        PORT: "",
      }),
    ).toMatchObject({
      OUTBOX_RETENTION_SECONDS: 3600,
      DB_STATEMENT_TIMEOUT_MS: 10_000,
      DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: 5000,
      RELAY_MARK_INTERVAL_MS: 250,
      PORT: 9400,
    });
  });

  it("takes a retention of 0: rows deleted at publication", () => {
    expect(parseRelayEnv({ ...minimal, OUTBOX_RETENTION_SECONDS: "0" }).OUTBOX_RETENTION_SECONDS).toBe(0);
  });

  it("reads a crash point with its occurrence", () => {
    expect(parseRelayEnv({ ...minimal, RELAY_TEST_CRASH_AT: "mid-mark:3" }).RELAY_TEST_CRASH_AT).toEqual({
      point: "mid-mark",
      occurrence: 3,
    });
    expect(parseRelayEnv({ ...minimal, RELAY_TEST_CRASH_AT: "before-send" }).RELAY_TEST_CRASH_AT).toEqual({
      point: "before-send",
      occurrence: 1,
    });
  });
});
