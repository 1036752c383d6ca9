/**
 * CPU a user-service spends per consumed `order.created`, and PostgreSQL's backends with it, on a
 * backlog (the consumer reads batches of up to 64) and on a trickle (one event at a time, as at low
 * load). Runs against the PostgreSQL and Kafka of `tools/src/with-infra.ts`:
 *
 *   cd services/user-service && node ../../tools/src/with-infra.ts node bench/consume.ts [--events 3000]
 *
 * The trickle's figure includes this process's own producer and idle work (the same in every version
 * measured), so only differences between versions mean something.
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ALL_TOPICS, prefixedTopic, TOPICS, type User } from "@saga/contracts";
import { createKafka } from "@saga/kafka";
import { outboxMessage, outboxRow } from "@saga/messaging";
import { createLogger } from "@saga/observability";
import { createDatabase } from "@saga/tools/infra";
import pg from "pg";
import { createUserService, parseUserServiceEnv } from "../src/service.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function ticks(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return text ? Number(fields[11]) + Number(fields[12]) : 0;
}

// Every statement a node-postgres client sends (drizzle's included), but the script's own: what the
// service asks of PostgreSQL per event, BEGIN and COMMIT included.
let statements = 0;
const ownClients = new WeakSet<object>();
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  if (!ownClients.has(this)) statements++;
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;

async function main() {
  const { values } = parseArgs({ options: { events: { type: "string", default: "3000" } } });
  const events = Number(values.events);
  const run = `consume_bench_${Date.now()}`;
  // The servers of tools/src/with-infra.ts.
  const dbUrl = await createDatabase(process.env.POSTGRES_URL ?? "", run);
  const prefix = `${run}.`;
  const env = parseUserServiceEnv({
    DATABASE_URL: dbUrl,
    KAFKA_BROKERS: process.env.KAFKA_BROKERS,
    KAFKA_TOPIC_PREFIX: prefix,
    INSTANCE_ID: "bench-1",
    PORT: "0",
    // Its requests come straight from this script, not through the gateway.
    AUTH_DEV_MODE: "true",
  });
  const kafka = createKafka({ brokers: env.KAFKA_BROKERS, clientId: "consume-bench" });
  await kafka.createTopics(ALL_TOPICS.map((t) => prefixedTopic(prefix, t)));
  const service = await createUserService(env, { logger: createLogger("bench", "warn") });
  const producer = await kafka.createProducer();
  const admin = new pg.Client({ connectionString: dbUrl });
  ownClients.add(admin);
  await admin.connect();

  const users: string[] = [];
  for (let i = 0; i < 200; i++) {
    const res = await service.app.request("/users", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: 1_000_000_000 }),
    });
    users.push(((await res.json()) as User).id);
  }
  const message = (i: number) => {
    const orderId = randomUUID();
    const payload = { orderId, userId: users[i % users.length] as string, amount: 1 + (i % 50) };
    const row = outboxRow({ topic: TOPICS.orderCreated, aggregateId: orderId, payload });
    return outboxMessage({ ...row, headers: row.headers ?? {}, createdAt: new Date() }, prefix);
  };
  // The service's own counter: polling it costs no query.
  const applied = async () => {
    const metric = await service.runtime.metrics.registry.getSingleMetric("saga_events_applied_total")?.get();
    return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
  };
  const backendPids = async () =>
    (
      await admin.query<{ pid: number }>(
        "select pid from pg_stat_activity where datname = current_database() and application_name like 'user-service/%'",
      )
    ).rows.map((r) => r.pid);

  /** CPU of this process and of the service's PostgreSQL backends while `work` runs, per event. */
  async function measure(label: string, count: number, work: () => Promise<void>) {
    const pidsBefore = await backendPids();
    const pgBefore = new Map(await Promise.all(pidsBefore.map(async (p) => [p, await ticks(p)] as const)));
    const statementsBefore = statements;
    const cpu = process.cpuUsage();
    const started = performance.now();
    await work();
    const wall = performance.now() - started;
    const used = process.cpuUsage(cpu);
    let pgTicks = 0;
    for (const p of await backendPids()) pgTicks += (await ticks(p)) - (pgBefore.get(p) ?? 0);
    const perEvent = (us: number) => (us / count).toFixed(0);
    console.log(
      `${label}: ${count} events in ${(wall / 1000).toFixed(1)} s; CPU per event: user-service ${perEvent(used.user + used.system)} µs, its PostgreSQL backends ${perEvent(pgTicks * 10_000)} µs; ${((statements - statementsBefore) / count).toFixed(2)} statements per event`,
    );
  }

  // Backlog: every event on the topic before the consumer starts, so it reads full batches.
  await producer.send(Array.from({ length: events }, (_, i) => message(i)));
  await measure("backlog", events, async () => {
    await service.start();
    while ((await applied()) < events) await sleep(20);
  });
  // Trickle: 50 events a second, one per send, as at low load (batches of one or two).
  const trickle = Math.min(500, events);
  await measure("trickle", trickle, async () => {
    for (let i = 0; i < trickle; i++) {
      await producer.send([message(i)]);
      await sleep(20);
    }
    while ((await applied()) < events + trickle) await sleep(20);
  });

  await producer.close();
  await kafka.close();
  await admin.end();
  await service.stop();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
