import { TOPICS } from "@saga/contracts";
import { kafkaBrokers } from "@saga/tools/test/harness";
import { describe, expect, it } from "vitest";
import type { CrashPoint } from "../src/env.ts";
import {
  allPublished,
  backlog,
  eventually,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  readAll,
  row,
  spawnRelay,
  type TestRow,
  writeRows,
} from "./support.ts";

// 600 rows, 12 aggregates, both topics. Batches of 200 marked in chunks of 50; the crash comes in the
// second batch, so the first is on Kafka and marked, and the second is caught at the named step.
const ROWS = 600;
const BATCH = 200;
const CHUNK = 50;

const cases: { point: CrashPoint; markedAtCrash: number; onKafkaAtCrash: number }[] = [
  // The batch was read but never sent.
  { point: "before-send", markedAtCrash: BATCH, onKafkaAtCrash: BATCH },
  // Acknowledged by Kafka, not marked: all of it is sent again.
  { point: "after-send", markedAtCrash: BATCH, onKafkaAtCrash: 2 * BATCH },
  // Its first chunk marked, the rest not: only the rest is sent again.
  { point: "mid-mark", markedAtCrash: BATCH + CHUNK, onKafkaAtCrash: 2 * BATCH },
];

// With a retention of 0 the rows are deleted where they would be marked: the same points, the same counts.
describe.each(["3600", "0"])("a relay killed with SIGKILL, OUTBOX_RETENTION_SECONDS=%s", (retention) => {
  it.each(cases)(
    "at $point loses nothing and keeps each key's order after a restart",
    async ({ point, markedAtCrash, onKafkaAtCrash }) => {
      const { url, sql } = await freshOutbox();
      const prefix = await freshTopicPrefix();
      const written: TestRow[] = [];
      for (let tx = 0; tx < ROWS / 100; tx++) {
        const rows = Array.from({ length: 100 }, (_, i) =>
          row(
            `order-${(tx * 100 + i) % 12}`,
            tx * 100 + i,
            i % 3 === 0 ? TOPICS.orderCanceled : TOPICS.orderCreated,
          ),
        );
        written.push(...(await writeRows(sql, rows)));
      }
      const env = {
        ORDER_DB_URL: url,
        KAFKA_BROKERS: kafkaBrokers().join(","),
        KAFKA_TOPIC_PREFIX: prefix,
        RELAY_BATCH_SIZE: String(BATCH),
        RELAY_MARK_CHUNK_SIZE: String(CHUNK),
        OUTBOX_RETENTION_SECONDS: retention,
      };

      const doomed = spawnRelay({ ...env, RELAY_ID: "doomed", RELAY_TEST_CRASH_AT: `${point}:2` });
      expect(await doomed.exited, doomed.output()).toBe("SIGKILL");
      expect(await backlog(sql)).toBe(ROWS - markedAtCrash);
      expect(await readAll(prefix)).toHaveLength(onKafkaAtCrash);
      // Its temporary replication slot died with it: a dead relay holds back no WAL.
      await eventually(
        "the slot to be dropped",
        async () => {
          const [r] = await sql<
            { n: number }[]
          >`select count(*)::int as n from pg_replication_slots where database = current_database()`;
          return r?.n === 0;
        },
        10_000,
      );

      const survivor = spawnRelay({ ...env, RELAY_ID: "survivor" });
      await allPublished(sql);
      const duplicates = expectEveryRowInOrder(written, await readAll(prefix), prefix);
      expect(duplicates).toBe(onKafkaAtCrash - markedAtCrash);
      const [left] = await sql<{ n: number }[]>`select count(*)::int as n from outbox`;
      expect(left?.n, "rows left in the outbox").toBe(retention === "0" ? 0 : ROWS);
      expect(await survivor.kill("SIGTERM")).toBe(0);
    },
  );
});
