import { kafkaBrokers } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { RELAY_LOCK } from "../src/lease.ts";
import { createRelayService } from "../src/service.ts";
import { defectiveStore } from "./defects.ts";
import {
  allPublished,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  readAll,
  relayEnv,
  row,
  spawnRelay,
  startRelayInProcess,
  type TestRow,
  writeRows,
} from "./support.ts";

/** Rows of 10 orders, written in 5 transactions. */
async function writeSome(sql: Parameters<typeof writeRows>[0]): Promise<TestRow[]> {
  const written: TestRow[] = [];
  for (let t = 0; t < 5; t++) {
    written.push(...(await writeRows(sql, [row(`order-${t}`, 2 * t), row(`order-${t + 5}`, 2 * t + 1)])));
  }
  return written;
}

describe("a relay whose loop crashes", () => {
  it("gives the outbox up and reports not ready; the standby publishes everything", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const defective = createRelayService(relayEnv(url, prefix, { RELAY_ID: "defective" }), {
      createStore: defectiveStore,
    });
    defective.start();
    onTestFinished(() => defective.stop());
    const loop = defective.relays.get("order");
    await eventually("the defective relay to own the outbox", async () => loop?.isActive());
    const standby = startRelayInProcess(relayEnv(url, prefix, { RELAY_ID: "standby" }));
    expect((await defective.app.request("/ready")).status).toBe(200);

    const written = await writeSome(sql);
    const crash = await defective.failed;
    expect(crash).toBeInstanceOf(TypeError);
    expect(loop?.isActive()).toBe(false);
    const ready = await defective.app.request("/ready");
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: "DOWN", error: expect.stringContaining("crashed") });

    await allPublished(sql);
    expect(standby.relays.get("order")?.isActive()).toBe(true);
    // The lock is held by the standby's session alone: the crashed relay's is gone.
    const holders = await sql<{ application_name: string }[]>`
      select a.application_name from pg_locks l join pg_stat_activity a using (pid)
      where l.locktype = 'advisory' and l.granted and l.classid = ${RELAY_LOCK[0]} and l.objid = ${RELAY_LOCK[1]}
        and l.database = (select oid from pg_database where datname = current_database())`;
    expect(holders.map((h) => h.application_name)).toEqual(["relay/standby/order"]);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
  });

  it("exits non-zero so that its supervisor restarts it, and the standby publishes everything", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const defective = spawnRelay(
      {
        ORDER_DB_URL: url,
        KAFKA_BROKERS: kafkaBrokers().join(","),
        KAFKA_TOPIC_PREFIX: prefix,
        RELAY_ID: "a",
      },
      "test/fixtures/defective-relay.ts",
    );
    await eventually(
      "the defective relay to own the outbox",
      async () => metricValue(await defective.metrics(), "saga_relay_active", { outbox: "order" }) === 1,
    );
    const standby = startRelayInProcess(relayEnv(url, prefix, { RELAY_ID: "b" }));

    const written = await writeSome(sql);
    expect(await defective.exited, defective.output()).toBe(1);
    expect(defective.output()).toContain("relay loop crashed: gave the outbox up");

    await allPublished(sql);
    expect(standby.relays.get("order")?.isActive()).toBe(true);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
  });
});
