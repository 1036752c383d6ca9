import { Writable } from "node:stream";
import { createPgDatabase, lastKnownMigration, migrateDatabase } from "@saga/db";
import { createLogger } from "@saga/observability";
import { freshDatabase } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { createServiceRuntime } from "./service.ts";
import { freshTopicPrefix, serviceTestEnv } from "./testing/index.ts";

describe("createServiceRuntime", () => {
  it("warns when a newer version has migrated its database", async () => {
    const url = await freshDatabase("order_newer");
    await migrateDatabase(url, "order");
    // A newer order-service migrated it; this one starts on it (a rollback, or an older instance
    // restarted during an upgrade).
    const db = createPgDatabase(url, {});
    onTestFinished(() => db.close());
    await db.pool.query("insert into drizzle.__drizzle_migrations (hash, created_at) values ('newer', $1)", [
      lastKnownMigration("order") + 1,
    ]);

    const lines: { level: number; msg: string; unknownMigrations?: number }[] = [];
    const destination = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    const runtime = await createServiceRuntime({
      service: "order-service",
      database: "order",
      schema: {},
      env: serviceTestEnv("order-service", url, await freshTopicPrefix()),
      logger: createLogger("order-service", "warn", { destination }),
    });
    onTestFinished(() => runtime.stop());
    expect(lines.filter((l) => l.unknownMigrations !== undefined)).toEqual([
      expect.objectContaining({
        level: 40,
        unknownMigrations: 1,
        msg: expect.stringContaining("the database has migrations newer than this version's"),
      }),
    ]);
  });

  it("speaks TLS to Kafka when KAFKA_SSL=true: on the run's plaintext broker it is not ready, and says why", async () => {
    const url = await freshDatabase("order_tls");
    const runtime = await createServiceRuntime({
      service: "order-service",
      database: "order",
      schema: {},
      env: { ...serviceTestEnv("order-service", url, await freshTopicPrefix()), KAFKA_SSL: true },
      logger: createLogger("order-service", "silent"),
    });
    onTestFinished(() => runtime.stop());

    await expect(runtime.ready()).rejects.toThrow(/TLS/);
  });

  it("refuses to start on Kafka security settings that do not go together, before anything connects", async () => {
    const env = {
      ...serviceTestEnv("order-service", "postgres://127.0.0.1:1/nowhere", "p."),
      KAFKA_SASL_MECHANISM: "plain" as const,
      KAFKA_SASL_USERNAME: "saga",
      KAFKA_SASL_PASSWORD: "saga-password",
    };
    await expect(
      createServiceRuntime({ service: "order-service", database: "order", schema: {}, env }),
    ).rejects.toThrow(/KAFKA_SASL_MECHANISM: plain sends the password in clear/);
  });

  it("opens at most DB_POOL_MAX connections to its database", async () => {
    const url = await freshDatabase("order_pool");
    const runtime = await createServiceRuntime({
      service: "order-service",
      database: "order",
      schema: {},
      env: serviceTestEnv("order-service", url, await freshTopicPrefix(), { DB_POOL_MAX: 2 }),
      logger: createLogger("order-service", "silent"),
    });
    onTestFinished(() => runtime.stop());
    // Six statements at once: a pool of ten opens a connection for each.
    const answers = await Promise.all(
      Array.from({ length: 6 }, () =>
        runtime.db.pool.query<{ pid: number }>("select pg_backend_pid() as pid"),
      ),
    );
    expect(new Set(answers.map((a) => a.rows[0]?.pid)).size).toBe(2);
  });
});
