import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type KafkaServer, startKafka } from "@saga/tools/infra";
import { describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../bench/support.ts";
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
  startRelayInProcess,
  type TestRow,
  writeRows,
} from "./support.ts";

const DOWN_MS = 10_000;
// Two cold broker starts, the outage and a backlog to drain: 25–30 s on a quiet machine, 100 s in a CI run
// where every package's tests ran at once, past the suite's 90 s. Its own waits bound it, not this.
const timeout = 240_000;

describe("a relay whose broker goes away", () => {
  it("keeps the rows, shows the backlog growing, and publishes them all when the broker is back", {
    timeout,
  }, async () => {
    // A broker of this test's own: stopping the run's broker would break every other test.
    const dir = await mkdtemp(join(tmpdir(), "relay-outage-"));
    const ports = { port: await freePort(), controllerPort: await freePort() };
    const start = () => startKafka({ dataDir: join(dir, "kafka"), ...ports, durable: true });
    let broker: KafkaServer | undefined = await start();
    onTestFinished(async () => {
      await broker?.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const brokers = broker.brokers;

    const { url, sql } = await freshOutbox();
    const prefix = await freshTopicPrefix(brokers);
    const relay = startRelayInProcess(relayEnv(url, prefix, { KAFKA_BROKERS: brokers }));
    const gauges = async () => {
      const text = await (await relay.app.request("/metrics")).text();
      return {
        backlog: metricValue(text, "saga_relay_outbox_backlog", { outbox: "order" }) ?? Number.NaN,
        lag: metricValue(text, "saga_relay_outbox_lag_seconds", { outbox: "order" }) ?? Number.NaN,
      };
    };

    const written: TestRow[] = [];
    let writing = true;
    const writer = (async () => {
      for (let seq = 0; writing; seq++) {
        written.push(...(await writeRows(sql, [row(`order-${seq % 10}`, seq)])));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await eventually(
      "the first rows to be published",
      async () => (await gauges()).backlog === 0 && written.length > 20,
    );

    await broker.stop();
    broker = undefined;
    const downSince = Date.now();
    let peak = { backlog: 0, lag: 0 };
    while (Date.now() - downSince < DOWN_MS) {
      const g = await gauges();
      peak = { backlog: Math.max(peak.backlog, g.backlog), lag: Math.max(peak.lag, g.lag) };
      await new Promise((r) => setTimeout(r, 500));
    }
    // Rows written during the outage wait in the outbox, and the metrics say so.
    expect(peak.backlog).toBeGreaterThan(100);
    expect(peak.lag).toBeGreaterThan(DOWN_MS / 1000 - 3);

    broker = await start();
    writing = false;
    await writer;
    await allPublished(sql, 60_000);
    await eventually("the gauges to fall back to 0", async () => {
      const g = await gauges();
      return g.backlog === 0 && g.lag === 0;
    });
    expectEveryRowInOrder(written, await readAll(prefix, brokers), prefix);
  });
});
