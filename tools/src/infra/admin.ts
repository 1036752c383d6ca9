import { Admin } from "@platformatic/kafka";
import pg from "pg";

/** The URL of database `name` on the server of `postgresUrl`. */
export function databaseUrl(postgresUrl: string, name: string): string {
  const url = new URL(postgresUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

async function withClient<T>(postgresUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: postgresUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * Creates database `name` (if it does not exist) on the server of `postgresUrl`, which must
 * have the right to CREATE DATABASE, and returns the new database's URL.
 */
export async function createDatabase(postgresUrl: string, name: string): Promise<string> {
  await withClient(postgresUrl, async (client) => {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (rowCount) return;
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`).catch((err: { code?: string }) => {
      // 42P04 duplicate_database: created concurrently by someone else, which is what we wanted.
      if (err.code !== "42P04") throw err;
    });
  });
  return databaseUrl(postgresUrl, name);
}

/**
 * Gives the database of `url` defaults for the sessions that connect to it from now on, as an operator's
 * `ALTER DATABASE … SET` does; a session's own settings still win. Sessions already open keep theirs.
 * Works on a database whose sessions are read only by default (`default_transaction_read_only`), and
 * can make them writable again.
 */
export async function setDatabaseDefaults(url: string, settings: Record<string, string>): Promise<void> {
  await withClient(url, async (client) => {
    await client.query("SET default_transaction_read_only = off");
    const { rows } = await client.query<{ name: string }>("select current_database() as name");
    const database = client.escapeIdentifier(rows[0]?.name ?? "");
    for (const [setting, value] of Object.entries(settings)) {
      await client.query(
        `ALTER DATABASE ${database} SET ${client.escapeIdentifier(setting)} = ${client.escapeLiteral(value)}`,
      );
    }
  });
}

/** Drops database `name`, disconnecting its clients first; no error if it does not exist. */
export async function dropDatabase(postgresUrl: string, name: string): Promise<void> {
  await withClient(postgresUrl, async (client) => {
    for (let attempt = 1; ; attempt++) {
      try {
        // WITH (FORCE) ends the sessions still connected, such as a test's idle pool.
        // https://www.postgresql.org/docs/current/sql-dropdatabase.html
        await client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`);
        return;
      } catch (err) {
        // 55006 object_in_use: FORCE does not end a replication connection (a relay's wake-up
        // stream that is still closing); ending it drops its temporary slot, then try again.
        if ((err as { code?: string }).code !== "55006" || attempt === 50) throw err;
        await client.query(
          "select pg_terminate_backend(active_pid) from pg_replication_slots where database = $1 and active_pid is not null",
          [name],
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  });
}

/**
 * Creates the topics that do not exist yet, each with `partitions` partitions, and waits
 * until they have leaders. Replication is the broker's default.
 */
export async function createTopics(
  brokers: string[],
  topics: readonly string[],
  partitions = 6,
): Promise<void> {
  // The system's default client (kafkajs's request queue sets negative timeouts, which Node 24 warns of).
  const admin = new Admin({
    clientId: "saga-tools",
    bootstrapBrokers: brokers,
    retries: 10,
    retryDelay: 200,
  });
  admin.on("error", () => {}); // what fails reaches the caller through the calls below
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((topic) => !existing.has(topic));
    if (missing.length === 0) return;
    // A failure may be another process creating them meanwhile, or a request that timed out on a busy
    // controller whose creation still completes: fine, as long as they have leaders within the wait (a busy
    // KRaft broker still answers UNKNOWN_TOPIC_OR_PARTITION for a while after creating them).
    const failed = await admin.createTopics({ topics: missing, partitions }).then(
      () => undefined,
      (err: unknown) => err,
    );
    for (let attempt = 0; ; attempt++) {
      const ready = await admin
        .metadata({ topics: missing, forceUpdate: true })
        .then(({ topics: found }) =>
          missing.every((name) => {
            const t = found.get(name);
            return t !== undefined && t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0);
          }),
        )
        .catch(() => false);
      if (ready) return;
      if (attempt === 300)
        throw failed ?? new Error(`topics without leaders after 30 s: ${missing.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await admin.close().catch(() => {});
  }
}
