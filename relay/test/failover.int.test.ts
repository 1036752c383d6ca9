import { TOPICS } from "@saga/contracts";
import { kafkaBrokers } from "@saga/tools/test/harness";
import { describe, expect, it } from "vitest";
import {
  allPublished,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  type RelayProcess,
  readAll,
  row,
  spawnRelay,
  type TestRow,
  writeRows,
} from "./support.ts";

const isActive = async (relay: RelayProcess) =>
  metricValue(await relay.metrics(), "saga_relay_active", { outbox: "order" }) === 1;

describe("two relays on one outbox", () => {
  it("never reorder a key, and the standby takes over within seconds when the owner is killed", async () => {
    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix();
    const env = {
      ORDER_DB_URL: url,
      KAFKA_BROKERS: kafkaBrokers().join(","),
      KAFKA_TOPIC_PREFIX: prefix,
      RELAY_BATCH_SIZE: "50",
    };
    const relays = [spawnRelay({ ...env, RELAY_ID: "a" }), spawnRelay({ ...env, RELAY_ID: "b" })];
    await Promise.all(relays.map((r) => r.port));
    const owner = await eventually("one relay to own the outbox", async () => {
      const active = await Promise.all(relays.map(isActive));
      return active.filter(Boolean).length === 1 ? relays[active.indexOf(true)] : undefined;
    });
    const standby = relays.find((r) => r !== owner) as RelayProcess;

    // Writers all along: 20 orders, 1-3 events per transaction, both topics.
    const written: TestRow[] = [];
    let writing = true;
    let seq = 0;
    const writer = (async () => {
      while (writing) {
        const order = `order-${seq % 20}`;
        const n = 1 + (seq % 3);
        const rows = Array.from({ length: n }, (_, i) =>
          row(order, seq + i, (seq + i) % 4 === 0 ? TOPICS.orderCanceled : TOPICS.orderCreated),
        );
        seq += n;
        written.push(...(await writeRows(sql, rows)));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();

    // Both stay up for a while: the standby must not publish meanwhile.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await isActive(standby)).toBe(false);

    await owner?.kill("SIGKILL");
    const killedAt = Date.now();
    await eventually("the standby to take over", () => isActive(standby), 15_000, 100);
    const takeoverMs = Date.now() - killedAt;
    console.log(`takeover after ${takeoverMs} ms`);

    await new Promise((r) => setTimeout(r, 1000));
    writing = false;
    await writer;
    await allPublished(sql);
    expect(written.length).toBeGreaterThan(100);
    expectEveryRowInOrder(written, await readAll(prefix), prefix);
    // A graceful stop: the batch in hand is finished, the lock given up, exit code 0.
    expect(await standby.kill("SIGTERM")).toBe(0);
  });
});
