import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type KafkaServer, startKafka } from "@saga/tools/infra";
import { describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../bench/support.ts";
import {
  allPublished,
  backlog,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  metricValue,
  type Outbox,
  ownPostgresServer,
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

// The CDC test reads its relay's replication slot: on a server of this file's own, its slot is created
// without waiting for other files' transactions (see ownPostgresServer).
const ownServerUrl = ownPostgresServer();

/**
 * A broker of the test's own, on fixed ports so that `start()` brings the same one back after `stop()`.
 * While it is stopped, the test holds its ports: `freePort` keeps a port from being handed out twice only
 * within a process, and the test files run in several, so another file's server took the controller's
 * port during an outage once, and the broker could not come back.
 */
async function ownBroker() {
  // Stopping the run's broker would break every other test.
  const dir = await mkdtemp(join(tmpdir(), "relay-outage-"));
  const ports = { port: await freePort(), controllerPort: await freePort() };
  const start = () => startKafka({ dataDir: join(dir, "kafka"), ...ports, durable: true });
  let broker: KafkaServer | undefined = await start();
  let held: Server[] = [];
  const release = async () => {
    await Promise.all(held.map((server) => new Promise((resolve) => server.close(resolve))));
    held = [];
  };
  onTestFinished(async () => {
    await broker?.stop();
    await release();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    brokers: broker.brokers,
    async stop() {
      await broker?.stop();
      broker = undefined;
      held = await Promise.all(
        [ports.port, ports.controllerPort].map(
          (port) =>
            new Promise<Server>((resolve, reject) => {
              // A client that connects meanwhile is closed at once, as a broker that is away would.
              const server = createServer((socket) => socket.destroy()).once("error", reject);
              server.listen(port, "127.0.0.1", () => resolve(server));
            }),
        ),
      );
    },
    async start() {
      await release();
      broker = await start();
    },
  };
}

/** A row every 20 ms (aggregates order-0 … order-9) until `stop()`. */
function writeSteadily(sql: Outbox["sql"]) {
  const written: TestRow[] = [];
  let writing = true;
  const writer = (async () => {
    for (let seq = 0; writing; seq++) {
      written.push(...(await writeRows(sql, [row(`order-${seq % 10}`, seq)])));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  onTestFinished(() => {
    writing = false;
    return writer;
  });
  return {
    written,
    stop: () => {
      writing = false;
      return writer;
    },
  };
}

describe("a relay whose broker goes away", () => {
  it("keeps the rows, shows the backlog growing, and publishes them all when the broker is back", {
    timeout,
  }, async () => {
    const broker = await ownBroker();
    const { brokers } = broker;

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

    const writer = writeSteadily(sql);
    const { written } = writer;
    await eventually(
      "the first rows to be published",
      async () => (await gauges()).backlog === 0 && written.length > 20,
    );

    await broker.stop();
    const downSince = Date.now();
    const writtenBefore = written.length;
    let peak = { backlog: 0, lag: 0 };
    // Each reading of the gauges, with the rows committed during the outage before it: it counts them all.
    const readings: { committed: number; backlog: number }[] = [];
    while (Date.now() - downSince < DOWN_MS) {
      const committed = written.length - writtenBefore;
      const g = await gauges();
      readings.push({ committed, backlog: g.backlog });
      peak = { backlog: Math.max(peak.backlog, g.backlog), lag: Math.max(peak.lag, g.lag) };
      await new Promise((r) => setTimeout(r, 500));
    }
    // Rows written during the outage wait in the outbox, and the metrics say so (as many as the writer
    // managed: a loaded machine writes fewer than one every 20 ms).
    expect(readings.at(-1)?.committed).toBeGreaterThan(20);
    for (const { committed, backlog } of readings) expect(backlog).toBeGreaterThanOrEqual(committed);
    expect(peak.lag).toBeGreaterThan(DOWN_MS / 1000 - 3);

    await broker.start();
    await writer.stop();
    await allPublished(sql, 60_000);
    await eventually("the gauges to fall back to 0", async () => {
      const g = await gauges();
      return g.backlog === 0 && g.lag === 0;
    });
    expectEveryRowInOrder(written, await readAll(prefix, brokers), prefix);
  });
  it("in the CDC mode, lets its replication slot move on while the broker is away, and loses no row", {
    timeout,
  }, async () => {
    const broker = await ownBroker();
    const { url, sql } = await freshOutbox("order", ownServerUrl());
    const prefix = await freshTopicPrefix(broker.brokers);
    // The stream may hold the server's WAL for rows not yet on Kafka for a second, not the default 30 s.
    const relay = startRelayInProcess(
      relayEnv(url, prefix, { KAFKA_BROKERS: broker.brokers, RELAY_MODE: "cdc", RELAY_SLOT_HOLD_MS: 1000 }),
    );
    const streaming = async () =>
      metricValue(await (await relay.app.request("/metrics")).text(), "saga_relay_streaming", {
        outbox: "order",
      }) === 1;
    // Creating the slot waits for every transaction open on the server.
    await eventually("the relay to publish from the stream", streaming, 60_000);
    const writer = writeSteadily(sql);
    const { written } = writer;
    await eventually("rows to be published from the stream", async () => {
      // Counted in the table: a streamed row waits up to RELAY_MARK_INTERVAL_MS for its mark.
      const [r] = await sql<
        { n: number }[]
      >`select count(*)::int as n from outbox where published_at is not null`;
      return (r?.n ?? 0) > 20;
    });

    await broker.stop();
    // Rows go on being written: the stream carries them, and no send of them can be acknowledged.
    const downAt = written.length;
    await eventually("rows written while the broker is away", async () => written.length > downAt + 50);
    // The relay's slot (the only one of this database), whether it has confirmed `marker`, and the WAL
    // written so far.
    const relaySlot = async (marker = "0/0") => {
      const [slot, ...more] = await sql<{ name: string; pid: number | null; lsn: string; past: boolean }[]>`
        select slot_name as name, active_pid as pid, pg_current_wal_lsn()::text as lsn,
          confirmed_flush_lsn >= ${marker}::pg_lsn as past
        from pg_replication_slots where database = current_database()`;
      return slot?.pid && more.length === 0 ? slot : undefined;
    };
    const held = await eventually("the relay's slot", () => relaySlot());
    expect(await backlog(sql), "rows waiting for the broker").toBeGreaterThan(50);
    // Every WAL record before a slot's confirmed position may go: the slot no longer holds back what was
    // written since the outage began (before, the server kept it all until the broker came back).
    const movedOn = await eventually(
      "the relay's slot to move past the WAL written during the outage",
      async () => {
        const slot = await relaySlot(held.lsn);
        return slot?.past && slot;
      },
    );
    // The slot that held the marker, on the same connection (its WAL sender's pid), not a new one: a
    // relay that reconnected would have a slot starting past the marker without having given anything up.
    expect({ name: movedOn.name, pid: movedOn.pid }, "the slot that held the WAL moved on").toEqual({
      name: held.name,
      pid: held.pid,
    });
    expect(await backlog(sql), "still waiting for the broker").toBeGreaterThan(50);

    await broker.start();
    await writer.stop();
    await allPublished(sql, 60_000);
    expectEveryRowInOrder(written, await readAll(prefix, broker.brokers), prefix);
    // And once caught up, it publishes from the stream again.
    await eventually("the relay to publish from the stream again", streaming, 60_000);
  });
});
