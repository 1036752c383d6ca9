import { HEADERS } from "@saga/contracts";
import { createLogger } from "@saga/observability";
import { describe, expect, it, onTestFinished } from "vitest";
import { createOutboxStore } from "../src/outbox-store.ts";
import { createRelayService } from "../src/service.ts";
import {
  allPublished,
  backlog,
  eventually,
  freshOutbox,
  freshTopicPrefix,
  holdSynchronousCommits,
  metricValue,
  orderWakeups,
  ownPostgresServer,
  readAll,
  relayEnv,
  releaseSynchronousCommits,
  row,
  writeHeld,
} from "./support.ts";

// RELAY_MODE=table, on a server of this file's own: holding commits (see holdSynchronousCommits) is a
// setting of the whole server.
const ownServerUrl = ownPostgresServer();

describe("relay in the table mode", () => {
  it("publishes a row streamed before it was visible once it is, not at the next poll", async () => {
    const { url, sql } = await freshOutbox("order", ownServerUrl());
    const prefix = await freshTopicPrefix();
    let readsDone = 0;
    const relay = createRelayService(
      // A ten-minute poll: only the relay's own wake-ups can explain a row published within seconds.
      relayEnv(url, prefix, { RELAY_MODE: "table", RELAY_POLL_INTERVAL_MS: 600_000 }),
      {
        logger: createLogger("relay", process.env.TEST_LOG_LEVEL ?? "fatal"),
        createStore: (db, options) => {
          const store = createOutboxStore(db, options);
          return {
            ...store,
            readBatch: (limit, signal) => store.readBatch(limit, signal).finally(() => readsDone++),
          };
        },
      },
    );
    relay.start();
    onTestFinished(() => relay.stop());
    const wakeups = (source: "poll" | "replication") => orderWakeups(relay, source);
    // Until the relay sees its stream up it polls every 100 ms; once no poll came for 300 ms it waits on
    // the ten-minute one (creating the slot waits for every transaction open on the server).
    let seen = -1;
    const { now: polls } = await eventually(
      "the relay to stop its fallback polling",
      async () => {
        const now = await wakeups("poll");
        const settled = now === seen && (await wakeups("replication")) > 0;
        seen = now;
        return settled && { now };
      },
      60_000,
      300,
    );

    // The stream carries the commit, and wakes the relay, before any other session can see the row: the
    // read it wakes finds nothing, and no later commit comes to wake it again.
    await holdSynchronousCommits(ownServerUrl());
    onTestFinished(() => releaseSynchronousCommits(ownServerUrl()));
    const readsBefore = readsDone;
    const { committed } = await writeHeld(sql, row("held", 1));
    await eventually(
      "the relay to read the table once woken by the held commit",
      async () => readsDone > readsBefore,
    );
    expect(await backlog(sql), "the held row, invisible").toBe(0);

    await releaseSynchronousCommits(ownServerUrl());
    const held = await committed;
    // Far below the ten-minute poll, which would be the next read without a look again.
    await allPublished(sql, 30_000);
    expect((await readAll(prefix)).map((m) => m.headers[HEADERS.eventId])).toContain(held.id);
    expect(await wakeups("poll"), "no poll came").toBe(polls);
    const text = await (await relay.app.request("/metrics")).text();
    expect(
      metricValue(text, "saga_relay_visibility_waits_total", { outbox: "order" }),
    ).toBeGreaterThanOrEqual(1);
  });
});
