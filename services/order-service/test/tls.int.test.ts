import { randomUUID } from "node:crypto";
import { useTlsPostgres } from "@saga/tools/test/tls-postgres";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { freshTopicPrefix, startInProcess, testEnv } from "./support.ts";

describe("order-service on a database reached over TLS", () => {
  const server = useTlsPostgres();

  it("starts with sslmode=verify-full, sslrootcert and channel_binding, and hears decisions on its LISTEN connection", async () => {
    const url = `${await server().createDatabase("order_tls")}?sslmode=verify-full&sslrootcert=${server().caFile}&channel_binding=require`;
    // Migrations, the pool and the LISTEN connection of held reads all connect before it is created.
    const service = await startInProcess({ ...testEnv(url, await freshTopicPrefix()), INSTANCE_ID: "tls" });
    onTestFinished(() => service.stop());
    const { pool } = service.runtime.db;

    const id = randomUUID();
    await pool.query("insert into orders (id, user_id, amount, status) values ($1, $2, 7, 'PENDING')", [
      id,
      randomUUID(),
    ]);
    const answer = service.app.request(`/orders/${id}`, { headers: { prefer: "wait=25" } });
    await vi.waitFor(() => expect(service.waits.waiting()).toBe(1), { timeout: 5000, interval: 20 });
    await pool.query("update orders set status = 'CONFIRMED', updated_at = now() where id = $1", [id]);
    expect(await (await answer).json()).toMatchObject({ id, status: "CONFIRMED" });

    const { rows } = await pool.query<{ name: string; ssl: boolean }>(
      `select a.application_name as name, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid)
       where a.application_name like 'order-service/tls%'`,
    );
    expect(new Set(rows.map((r) => r.name))).toEqual(
      new Set(["order-service/tls", "order-service/tls/waits"]),
    );
    expect(rows.filter((r) => !r.ssl)).toEqual([]);
  });
});
