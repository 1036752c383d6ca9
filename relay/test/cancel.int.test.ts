import { once } from "node:events";
import { type AddressInfo, createConnection, createServer, type Socket } from "node:net";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { createOutboxStore } from "../src/outbox-store.ts";
import { freshOutbox } from "./support.ts";

/**
 * A TCP relay to the database that can stop taking new connections while the ones it has stay up: what
 * a client sees of a server that is going away (a restart, a failover) while its statement still runs.
 */
async function closableProxy(target: URL) {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = new URL(target);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    // Stops listening at once; the connections it has go on (close's callback would wait for them).
    stopListening: () => void server.close(),
    destroy: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * Starts the relay's read of the outbox behind a lock another session holds, so that the statement is
 * running on the server when `signal` aborts; `unlock` lets it finish.
 */
async function readBehindALock(
  sql: postgres.Sql,
  store: ReturnType<typeof createOutboxStore>,
  signal: AbortSignal,
) {
  const locker = await sql.reserve();
  onTestFinished(() => locker.release());
  await locker`begin`;
  await locker`lock table outbox in access exclusive mode`;
  const reading = store.readBatch(10, signal);
  await new Promise((r) => setTimeout(r, 200));
  return { reading, unlock: async () => void (await locker`commit`) };
}

describe("a relay statement whose caller gives up", () => {
  it("is cancelled on the server", async () => {
    const { sql } = await freshOutbox();
    const aborted = new AbortController();
    const { reading, unlock } = await readBehindALock(sql, createOutboxStore(sql), aborted.signal);
    aborted.abort(new Error("the caller gave up"));
    // Cancelled while the lock still holds it: the server ends the statement, not the lock's release.
    await expect(reading).rejects.toMatchObject({ code: "57014" });
    await unlock();
  });

  it("fails to cancel quietly when the database cannot be reached: no unhandled rejection, and the statement ends on its own", async () => {
    const { url, sql } = await freshOutbox();
    const proxy = await closableProxy(new URL(url));
    onTestFinished(() => proxy.destroy());
    const relaySql = postgres(proxy.url, { max: 1, onnotice: () => {} });
    onTestFinished(() => relaySql.end({ timeout: 1 }));
    const store = createOutboxStore(relaySql);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    onTestFinished(() => {
      process.off("unhandledRejection", onUnhandled);
    });

    const aborted = new AbortController();
    const { reading, unlock } = await readBehindALock(sql, store, aborted.signal);
    // A cancel is a connection of its own, and the server no longer takes any.
    proxy.stopListening();
    aborted.abort(new Error("the caller gave up"));
    await new Promise((r) => setTimeout(r, 200));
    await unlock();

    expect(await reading).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(unhandled).toEqual([]);
  });
});
