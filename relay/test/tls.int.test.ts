import { migrateDatabase, postgresJsOptions } from "@saga/db";
import { useTlsPostgres } from "@saga/tools/test/tls-postgres";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  allPublished,
  eventually,
  expectEveryRowInOrder,
  freshTopicPrefix,
  readAll,
  relayEnv,
  row,
  startRelayInProcess,
  writeRows,
} from "./support.ts";

describe("relay on an outbox reached over TLS", () => {
  const server = useTlsPostgres();

  it("publishes with sslmode=verify-full, sslrootcert and channel_binding in its URL, every session encrypted", async () => {
    // As a provider's URL has it (channel_binding), with the CA the server's certificate comes from.
    const url = `${await server().createDatabase("relay_tls")}?sslmode=verify-full&sslrootcert=${server().caFile}&channel_binding=require`;
    await migrateDatabase(url, "order");
    const sql = postgres({ ...postgresJsOptions(url), max: 2, onnotice: () => {} });
    onTestFinished(() => sql.end({ timeout: 1 }));
    const prefix = await freshTopicPrefix();

    startRelayInProcess(relayEnv(url, prefix));
    const a = crypto.randomUUID();
    const written = await writeRows(sql, [row(a, 1), row(a, 2)]);
    await allPublished(sql);
    expect(expectEveryRowInOrder(written, await readAll(prefix), prefix)).toBe(0);

    // The outbox pool and the lease's session (relay/test/order), and the replication stream (…/wakeups).
    const sessions = await eventually("the relay's wake-up stream", async () => {
      const rows = await sql<{ name: string; ssl: boolean }[]>`
        select a.application_name as name, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid)
        where a.application_name like 'relay/test/order%'`;
      return rows.some((r) => r.name === "relay/test/order/wakeups") && rows;
    });
    expect(new Set(sessions.map((s) => s.name))).toEqual(
      new Set(["relay/test/order", "relay/test/order/wakeups"]),
    );
    expect(sessions.filter((s) => !s.ssl)).toEqual([]);
  });
});
