/**
 * What a service's consumer costs per event, and PostgreSQL's backends with it: the harness of each
 * service's `bench/consume.ts`. Two phases, against the PostgreSQL and Kafka of `tools/src/with-infra.ts`:
 * - backlog: every event on the topic before the consumer starts, so that it reads full batches;
 * - trickle: 50 events a second, one per send, as at low load (batches of one or two).
 *
 * The trickle's figure includes this process's own producer and idle work (the same in every version
 * measured), so only differences between versions mean something.
 */
import { readFile } from "node:fs/promises";
import { ALL_TOPICS, prefixedTopic } from "@saga/contracts";
import { connectionOptions } from "@saga/db";
import { createKafka, type OutgoingMessage } from "@saga/kafka";
import { createDatabase } from "@saga/tools/infra";
import pg from "pg";
import type { Registry } from "prom-client";

/** What the harness needs of a service: its metrics (applied events are counted there) and its life. */
export type BenchedService = {
  runtime: { metrics: { registry: Registry } };
  start(): Promise<void>;
  stop(): Promise<void>;
};

export type ConsumeBenchOptions<S extends BenchedService> = {
  /** The service's name, as its pool's `application_name` begins (`user-service/…`) and in the report. */
  name: string;
  /** Events of the backlog; the trickle has as many, up to 500. */
  events: number;
  /** The service on this database and topic prefix, not started yet. */
  create(env: Record<string, string | undefined>): Promise<S>;
  /**
   * Writes what the events need (users, PENDING orders) through the service's API, then returns the
   * event numbered `i` (0 to `count` − 1: the backlog's, then the trickle's).
   */
  seed(service: S, count: number, prefix: string): Promise<(i: number) => OutgoingMessage>;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU time of a process so far, in clock ticks (10 ms on Linux). */
async function ticks(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return text ? Number(fields[11]) + Number(fields[12]) : 0;
}

export async function runConsumeBench<S extends BenchedService>(opts: ConsumeBenchOptions<S>): Promise<void> {
  const { name, events } = opts;
  // Every statement a node-postgres client sends (drizzle's included), but the harness's own: what the
  // service asks of PostgreSQL per event, BEGIN and COMMIT included.
  let statements = 0;
  const ownClients = new WeakSet<object>();
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    if (!ownClients.has(this)) statements++;
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;

  const run = `consume_bench_${Date.now()}`;
  const dbUrl = await createDatabase(process.env.POSTGRES_URL ?? "", run);
  const prefix = `${run}.`;
  const kafkaBrokers = process.env.KAFKA_BROKERS ?? "";
  const kafka = createKafka({ brokers: kafkaBrokers.split(","), clientId: "consume-bench" });
  await kafka.createTopics(ALL_TOPICS.map((t) => prefixedTopic(prefix, t)));
  const service = await opts.create({
    DATABASE_URL: dbUrl,
    KAFKA_BROKERS: kafkaBrokers,
    KAFKA_TOPIC_PREFIX: prefix,
    INSTANCE_ID: "bench-1",
    PORT: "0",
    // Its requests come straight from the bench, not through the gateway.
    AUTH_DEV_MODE: "true",
  });
  const producer = await kafka.createProducer();
  const admin = new pg.Client(connectionOptions(dbUrl));
  ownClients.add(admin);
  await admin.connect();

  const trickle = Math.min(500, events);
  const message = await opts.seed(service, events + trickle, prefix);
  // The service's own counter: polling it costs no query.
  const applied = async () => {
    const metric = await service.runtime.metrics.registry.getSingleMetric("saga_events_applied_total")?.get();
    return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
  };
  const backendPids = async () =>
    (
      await admin.query<{ pid: number }>(
        "select pid from pg_stat_activity where datname = current_database() and application_name like $1",
        [`${name}/%`],
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
      `${label}: ${count} events in ${(wall / 1000).toFixed(1)} s; CPU per event: ${name} ${perEvent(used.user + used.system)} µs, its PostgreSQL backends ${perEvent(pgTicks * 10_000)} µs; ${((statements - statementsBefore) / count).toFixed(2)} statements per event`,
    );
  }

  await producer.send(Array.from({ length: events }, (_, i) => message(i)));
  await measure("backlog", events, async () => {
    await service.start();
    while ((await applied()) < events) await sleep(20);
  });
  await measure("trickle", trickle, async () => {
    for (let i = 0; i < trickle; i++) {
      await producer.send([message(events + i)]);
      await sleep(20);
    }
    while ((await applied()) < events + trickle) await sleep(20);
  });

  await producer.close();
  await kafka.close();
  await admin.end();
  await service.stop();
  pg.Client.prototype.query = query;
}
