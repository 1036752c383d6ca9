import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { kafkaSecurity, parseEnv, requireInternalSecret, serviceEnvSchema } from "./env.ts";

const schema = serviceEnvSchema({ port: 8081, consumerGroup: "user-service" });
const minimal = {
  DATABASE_URL: "postgres://u@localhost:5432/user_db",
  KAFKA_BROKERS: "localhost:9092",
  INTERNAL_SECRET: "i".repeat(32),
};

describe("service environment", () => {
  it("applies the defaults and splits the broker list", () => {
    const env = parseEnv(schema, { ...minimal, KAFKA_BROKERS: " a:1, b:2 ," });
    expect(env).toMatchObject({
      PORT: 8081,
      KAFKA_BROKERS: ["a:1", "b:2"],
      KAFKA_TOPIC_PREFIX: "",
      CONSUMER_GROUP: "user-service",
      LOG_LEVEL: "info",
      INBOX_RETENTION_HOURS: 360,
      DEAD_LETTER_MAX_BYTES: 262_144,
      DB_POOL_MAX: 10,
      HOST: "127.0.0.1",
      AUTH_DEV_MODE: false,
    });
    expect(env.INSTANCE_ID.length).toBeGreaterThan(0);
  });

  // Kafka's defaults (https://kafka.apache.org/documentation/#topicconfigs_retention.ms), which the topics
  // of compose.yaml and the local stack keep: a record stays readable until its segment, closed segment.ms
  // after its first record, is past retention.ms and the next retention check has run.
  it("keeps inbox rows longer than a broker with Kafka's defaults can deliver a record again", () => {
    const day = 24 * 3600_000;
    const readable = { retentionMs: 7 * day, segmentMs: 7 * day, retentionCheckIntervalMs: 5 * 60_000 };
    const { INBOX_RETENTION_HOURS } = parseEnv(schema, minimal);
    expect(INBOX_RETENTION_HOURS * 3600_000).toBeGreaterThan(
      readable.retentionMs + readable.segmentMs + readable.retentionCheckIntervalMs,
    );
  });

  it("takes a broker named by its IPv6 address in brackets, except through kafkajs", () => {
    const brokers = "[::1]:9092, [fd00::a:1]:19092, kafka:9092";
    expect(parseEnv(schema, { ...minimal, KAFKA_BROKERS: brokers }).KAFKA_BROKERS).toEqual([
      "[::1]:9092",
      "[fd00::a:1]:19092",
      "kafka:9092",
    ]);
    // kafkajs 2.2.4 splits a broker at its first colon: "[" would be its host.
    expect(() => parseEnv(schema, { ...minimal, KAFKA_BROKERS: brokers, KAFKA_CLIENT: "kafkajs" })).toThrow(
      /KAFKA_BROKERS: kafkajs cannot reach an IPv6 address/,
    );
    expect(() => parseEnv(schema, { ...minimal, KAFKA_BROKERS: "::1:9092" })).toThrow(/KAFKA_BROKERS/);
  });

  // Compose's `${VAR}` of an unset VAR, an empty Helm value and a `VAR=` line all pass "".
  it("reads an empty variable as unset: its default applies, and a required one is missing", () => {
    const env = parseEnv(schema, {
      ...minimal,
      PORT: "",
      HOST: " ",
      DB_STATEMENT_TIMEOUT_MS: "",
      DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "",
      CONSUMER_RETRY_BACKOFF_MS: "",
      INBOX_RETENTION_HOURS: "",
    });
    expect(env).toMatchObject({
      PORT: 8081,
      HOST: "127.0.0.1",
      DB_STATEMENT_TIMEOUT_MS: 10_000,
      DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: 5000,
      CONSUMER_RETRY_BACKOFF_MS: 200,
      INBOX_RETENTION_HOURS: 360,
    });
    expect(() => parseEnv(schema, { ...minimal, DATABASE_URL: "" })).toThrow(
      /DATABASE_URL: required \(unset or empty\)/,
    );
  });

  // design.md, "Bounded work": a consumer frozen mid-transaction must lose its locks before Kafka gives
  // its partitions to another member, whose statements would otherwise wait for them and time out.
  it.each([
    [{ DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "0" }, /DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: must not be 0 \(none\)/],
    [
      { DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "60000", DB_STATEMENT_TIMEOUT_MS: "120000" },
      /DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: must be shorter than the consumer group's session timeout \(10000 ms\)/,
    ],
    [
      { DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "5000", DB_STATEMENT_TIMEOUT_MS: "5000" },
      /DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: must be shorter than DB_STATEMENT_TIMEOUT_MS/,
    ],
  ])("refuses session bounds out of the order a frozen consumer needs: %o", (bad, message) => {
    expect(() => parseEnv(schema, { ...minimal, ...bad })).toThrow(message);
  });

  it("takes an idle bound shorter than the statement bound and the session timeout, or statements unbounded", () => {
    const bounds = (source: Record<string, string>) => {
      const env = parseEnv(schema, { ...minimal, ...source });
      return [env.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS, env.DB_STATEMENT_TIMEOUT_MS];
    };
    expect(bounds({ DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: "2000", DB_STATEMENT_TIMEOUT_MS: "3000" })).toEqual([
      2000, 3000,
    ]);
    expect(bounds({ DB_STATEMENT_TIMEOUT_MS: "0" })).toEqual([5000, 0]);
  });

  it("starts without the internal secret only in development mode", () => {
    const env = parseEnv(schema, { ...minimal, INTERNAL_SECRET: undefined, AUTH_DEV_MODE: "true" });
    expect(env).toMatchObject({ AUTH_DEV_MODE: true, INTERNAL_SECRET: undefined });
    expect(() => requireInternalSecret(env)).not.toThrow();
    const production = parseEnv(schema, { ...minimal, INTERNAL_SECRET: undefined });
    expect(() => requireInternalSecret(production)).toThrow(
      /INTERNAL_SECRET: required .* unless AUTH_DEV_MODE=true/,
    );
  });

  it.each([
    [{ DATABASE_URL: undefined }, /DATABASE_URL/],
    [{ DATABASE_URL: "mysql://x" }, /DATABASE_URL: must be a postgres/],
    // A parameter that would set the session (postgres.js sent any it did not know to the server), a
    // certificate file that is not there, a TLS mode that node-postgres cannot do.
    [
      { DATABASE_URL: `${minimal.DATABASE_URL}?statement_timeout=0` },
      /DATABASE_URL: the parameter statement_timeout is not supported/,
    ],
    [
      { DATABASE_URL: `${minimal.DATABASE_URL}?sslmode=verify-full&sslrootcert=/no/such/ca.pem` },
      /DATABASE_URL: sslrootcert: cannot read \/no\/such\/ca.pem/,
    ],
    [
      { DATABASE_URL: `${minimal.DATABASE_URL}?sslmode=prefer` },
      /DATABASE_URL: sslmode=prefer is not supported/,
    ],
    [{ KAFKA_BROKERS: "" }, /KAFKA_BROKERS/],
    [{ KAFKA_BROKERS: "nohost" }, /KAFKA_BROKERS/],
    [{ PORT: "http" }, /PORT/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL/],
    [{ INBOX_RETENTION_HOURS: "0" }, /INBOX_RETENTION_HOURS/],
    [{ INTERNAL_SECRET: "short" }, /INTERNAL_SECRET: must be at least 32/],
    [{ AUTH_DEV_MODE: "maybe" }, /AUTH_DEV_MODE/],
    // Larger than one message to Kafka may be: the relay could not send the dead letter.
    [{ DEAD_LETTER_MAX_BYTES: "1048576" }, /DEAD_LETTER_MAX_BYTES/],
    [{ DEAD_LETTER_MAX_BYTES: "1000" }, /DEAD_LETTER_MAX_BYTES/],
    [{ DB_POOL_MAX: "0" }, /DB_POOL_MAX/],
    [{ DB_POOL_MAX: "2.5" }, /DB_POOL_MAX/],
    // Past 2^31-1 ms a Node timer fires after 1 ms: every back-off, or every queued request, would end at once.
    [{ CONSUMER_RETRY_BACKOFF_MS: "99999999999" }, /CONSUMER_RETRY_BACKOFF_MS: must be at most 2147483647/],
    [{ ADMISSION_QUEUE_TIMEOUT_MS: "1e100" }, /ADMISSION_QUEUE_TIMEOUT_MS: must be at most 2147483647/],
    // The client waits 2 s longer than the server's bound, on a timer too.
    [{ DB_STATEMENT_TIMEOUT_MS: "2147483647" }, /DB_STATEMENT_TIMEOUT_MS: must be at most 2147481647/],
  ])("fails naming the variable for %o", (bad, message) => {
    expect(() => parseEnv(schema, { ...minimal, ...bad })).toThrow(message);
  });
});

describe("Kafka's TLS and SASL settings", () => {
  const dir = mkdtempSync(join(tmpdir(), "kafka-ca-"));
  const caFile = join(dir, "ca.pem");
  const CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  writeFileSync(caFile, CA);
  const notPem = join(dir, "ca.der");
  writeFileSync(notPem, "0\x82\x01");
  const security = (vars: Record<string, string>) => kafkaSecurity(parseEnv(schema, { ...minimal, ...vars }));
  const scram = { KAFKA_SASL_USERNAME: "saga", KAFKA_SASL_PASSWORD: "saga-password" };

  it("ask for neither by default: plaintext, no sign-in, as the local broker", () => {
    expect(security({})).toEqual({});
  });

  it("give SCRAM over TLS checked against the CA file's certificates, the mechanism as Kafka writes it", () => {
    expect(
      security({
        KAFKA_SSL: "true",
        KAFKA_SSL_CA_FILE: caFile,
        KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
        ...scram,
      }),
    ).toEqual({
      tls: { ca: CA },
      sasl: { mechanism: "scram-sha-512", username: "saga", password: "saga-password" },
    });
  });

  it("give TLS checked against the system's authorities without a CA file, and PLAIN over it", () => {
    expect(security({ KAFKA_SSL: "true", KAFKA_SASL_MECHANISM: "plain", ...scram })).toEqual({
      tls: {},
      sasl: { mechanism: "plain", username: "saga", password: "saga-password" },
    });
  });

  it("let SCRAM go without TLS: it never sends the password", () => {
    expect(security({ KAFKA_SASL_MECHANISM: "scram-sha-256", ...scram })).toEqual({
      sasl: { mechanism: "scram-sha-256", username: "saga", password: "saga-password" },
    });
  });

  it.each([
    [
      { KAFKA_SASL_MECHANISM: "oauthbearer", ...scram },
      /KAFKA_SASL_MECHANISM: must be plain, scram-sha-256, scram-sha-512/,
    ],
    [{ KAFKA_SSL: "maybe" }, /KAFKA_SSL/],
    [
      { KAFKA_SASL_MECHANISM: "scram-sha-256" },
      /KAFKA_SASL_USERNAME: required .*KAFKA_SASL_PASSWORD: required/,
    ],
    [scram, /KAFKA_SASL_MECHANISM: required with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD/],
    [{ KAFKA_SASL_MECHANISM: "plain", ...scram }, /KAFKA_SASL_MECHANISM: plain sends the password in clear/],
    [{ KAFKA_SSL_CA_FILE: caFile }, /KAFKA_SSL_CA_FILE: only with KAFKA_SSL=true/],
    [
      { KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: join(dir, "missing.pem") },
      /KAFKA_SSL_CA_FILE: cannot read .*missing\.pem/,
    ],
    [
      { KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: notPem },
      /KAFKA_SSL_CA_FILE: .*ca\.der holds no PEM certificate/,
    ],
  ])("fail at start naming the variable for %o, never showing the password", (vars, message) => {
    const attempt = () => security(vars);
    expect(attempt).toThrow(message);
    expect(attempt).not.toThrow(/saga-password/);
  });
});
