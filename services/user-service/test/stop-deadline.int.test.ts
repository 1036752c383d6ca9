import { readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDatabase, freePort, startKafka, startPostgres } from "@saga/tools/infra";
import { uniqueName } from "@saga/tools/test/harness";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { expect, it, onTestFinished, vi } from "vitest";
import { startInProcess, testEnv } from "./support.ts";

/** 'T' while a process is stopped by SIGSTOP (proc(5), field 3 of /proc/<pid>/stat). */
const stateOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];

it("stop() returns by its deadline while Kafka and PostgreSQL hang", async () => {
  // A broker and a server of this test's own, frozen with SIGSTOP: freezing the run's would stall every
  // other test. A frozen process keeps its sockets open and answers nothing, as a hung server does.
  const dir = await mkdtemp(join(tmpdir(), "stop-deadline-"));
  // PostgreSQL refuses to run as root, so as root it runs as another account that must reach the directory.
  await chmod(dir, 0o755);
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const pg = await startPostgres({ dataDir: join(dir, "pg"), port: await freePort(), durable: false });
  onTestFinished(() => pg.stop());
  const kafka = await startKafka({
    dataDir: join(dir, "kafka"),
    port: await freePort(),
    controllerPort: await freePort(),
    durable: false,
  });
  onTestFinished(() => kafka.stop());

  const url = await createDatabase(pg.url, "user_db");
  const env = testEnv(url, `${uniqueName("stop")}.`, { KAFKA_BROKERS: kafka.brokers });
  const service = await startInProcess(env);
  let stopped = false;
  onTestFinished(() => (stopped ? undefined : service.stop()));
  await service.start();
  await vi.waitFor(() => expect(service.runtime.isConsuming()).toBe(true), { timeout: 60_000 });
  // The pool holds connections, as it does after any request.
  expect((await service.app.request("/ready")).status).toBe(200);

  const admin = postgres(url, { max: 1, onnotice: () => {} });
  onTestFinished(() => admin.end({ timeout: 1 }));
  // A statement in flight on the service's pool when its server hangs, as a request's would be: closing a
  // pool waits for its checked-out clients, while its idle ones are dropped without waiting (pg-pool's
  // end()), so without one the pool would close at once however frozen its server.
  void service.runtime.db.db.execute(sql`select pg_sleep(60)`).catch(() => {});
  await vi.waitFor(
    async () => {
      const [running] = await admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'`;
      expect(running?.n).toBe(1);
    },
    { timeout: 10_000 },
  );
  const backends = await admin<{ pid: number }[]>`
    select pid from pg_stat_activity where application_name = ${`user-service/${env.INSTANCE_ID}`}`;
  expect(backends.length).toBeGreaterThan(0);
  const frozen = [kafka.pid, ...backends.map((b) => b.pid)];
  // Registered last, so it runs first: the servers are thawed before anything is stopped.
  onTestFinished(() => {
    for (const pid of frozen) process.kill(pid, "SIGCONT");
  });
  for (const pid of frozen) process.kill(pid, "SIGSTOP");

  const deadline = AbortSignal.timeout(2000);
  await service.stop(deadline);
  stopped = true;
  // It waited for the hung calls up to its deadline, and no longer: both are still frozen.
  expect(deadline.aborted).toBe(true);
  expect(stateOf(kafka.pid)).toBe("T");
  expect(backends.map((b) => stateOf(b.pid))).toEqual(backends.map(() => "T"));
});
