import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, inject, onTestFinished } from "vitest";
import { createDatabase, createTopics, dropDatabase, setDatabaseDefaults } from "../infra/admin.ts";
import type {} from "./provided-context.ts";

/** The brokers of the test run's Kafka (see global-setup.ts). */
export function kafkaBrokers(): string[] {
  return inject("kafkaBrokers");
}

/** A URL with the right to CREATE DATABASE on the test run's PostgreSQL. */
export function postgresUrl(): string {
  return inject("postgresUrl");
}

/** `prefix` plus a random suffix: names that no other test, file or run uses. */
export function uniqueName(prefix: string, separator = "-"): string {
  return `${prefix}${separator}${randomBytes(5).toString("hex")}`;
}

function databaseName(prefix: string): string {
  return uniqueName(prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_"), "_");
}

/**
 * Inside a test: creates an empty database with a random name, returns its URL, and drops
 * it when the test has finished. For a database shared by a file's or suite's tests, use
 * `useFreshDatabase()`.
 */
export async function freshDatabase(prefix = "test"): Promise<string> {
  const name = databaseName(prefix);
  const drop = () => dropDatabase(postgresUrl(), name);
  try {
    onTestFinished(drop);
  } catch (err) {
    // Vitest can only add hooks while collecting: an afterAll added in a beforeAll never runs.
    throw new Error(
      "freshDatabase() runs inside a test; for a beforeAll, call useFreshDatabase() in the suite",
      {
        cause: err,
      },
    );
  }
  return createDatabase(postgresUrl(), name);
}

/**
 * At suite level (in a file or a `describe`): creates an empty database with a random name
 * before the suite's tests and drops it after them. Returns a getter for its URL, to call
 * in hooks and tests.
 */
export function useFreshDatabase(prefix = "test"): () => string {
  const name = databaseName(prefix);
  let url: string | undefined;
  beforeAll(async () => {
    url = await createDatabase(postgresUrl(), name);
  });
  afterAll(() => dropDatabase(postgresUrl(), name));
  return () => {
    if (!url) throw new Error("useFreshDatabase(): the database exists from the suite's beforeAll on");
    return url;
  };
}

/**
 * Makes the database of `url` write dates for its new sessions as a server set up elsewhere may: day before
 * month (`DateStyle = 'SQL, DMY'`: 05/12/2026 for 5 December) in a zone that is not UTC, which that style
 * names by an abbreviation (CET). A session that takes these, rather than pinning its own, misreads dates.
 */
export function setForeignDateStyle(url: string): Promise<void> {
  return setDatabaseDefaults(url, { DateStyle: "SQL, DMY", TimeZone: "Europe/Berlin" });
}

/**
 * Creates topics named after `names` with one random prefix for the set and returns the real
 * name of each: `const t = await freshTopics([TOPICS.orderCreated]); t[TOPICS.orderCreated]`.
 * A prefix rather than a suffix keeps derived names consistent: the fresh name of
 * `order.created.dlq` is the fresh name of `order.created` plus `.dlq`.
 */
export async function freshTopics<const T extends readonly string[]>(
  names: T,
  partitions = 3,
): Promise<Record<T[number], string>> {
  const prefix = uniqueName("test", "-");
  const topics = Object.fromEntries(names.map((name) => [name, `${prefix}.${name}`])) as Record<
    T[number],
    string
  >;
  await createTopics(kafkaBrokers(), Object.values(topics), partitions);
  return topics;
}

/** A consumer group id of its own, so that no other test's offsets or members interfere. */
export function freshGroupId(prefix = "test"): string {
  return uniqueName(prefix);
}
