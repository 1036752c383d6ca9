import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startKafka } from "@saga/tools/infra";
import { expect, it, onTestFinished } from "vitest";
import { RELAY_LOCK } from "../src/lease.ts";
import { createRelayService } from "../src/service.ts";
import { eventually, freshOutbox, freshTopicPrefix, relayEnv, row, writeRows } from "./support.ts";

/** 'T' while a process is stopped by SIGSTOP (proc(5), field 3 of /proc/<pid>/stat). */
const stateOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];

it("stop() returns by its deadline and gives the outbox up while Kafka hangs mid-send", async () => {
  // A broker of this test's own, frozen with SIGSTOP: it keeps its sockets open and answers nothing.
  const dir = await mkdtemp(join(tmpdir(), "relay-stop-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const broker = await startKafka({
    dataDir: join(dir, "kafka"),
    port: await freePort(),
    controllerPort: await freePort(),
    durable: false,
  });
  onTestFinished(() => broker.stop());
  const { url, sql } = await freshOutbox();
  const prefix = await freshTopicPrefix(broker.brokers);
  const relay = createRelayService(relayEnv(url, prefix, { KAFKA_BROKERS: broker.brokers }));
  relay.start();
  let stopped = false;
  onTestFinished(() => (stopped ? undefined : relay.stop()));
  await writeRows(sql, [row("order-1", 1)]);
  await eventually("the first row to be published", async () => {
    const [r] = await sql<{ n: number }[]>`select count(*)::int as n from outbox where published_at is null`;
    return r?.n === 0;
  });

  process.kill(broker.pid, "SIGSTOP");
  // Registered last, so it runs first: the broker is thawed before anything is stopped.
  onTestFinished(() => {
    process.kill(broker.pid, "SIGCONT");
  });
  await writeRows(sql, [row("order-2", 2)]);
  // The relay is sending it now, to a broker that does not answer (it takes a row within milliseconds;
  // 1 s was once too short, with a chaos run beside the test on the two cores).
  await new Promise((r) => setTimeout(r, 3000));

  const deadline = AbortSignal.timeout(1500);
  await relay.stop(deadline);
  stopped = true;
  expect(deadline.aborted).toBe(true);
  expect(stateOf(broker.pid)).toBe("T");
  const holders = await sql<{ pid: number }[]>`
    select pid from pg_locks
    where locktype = 'advisory' and granted and classid = ${RELAY_LOCK[0]} and objid = ${RELAY_LOCK[1]}
      and database = (select oid from pg_database where datname = current_database())`;
  expect(holders, "the outbox's lock after stop()").toEqual([]);
});
