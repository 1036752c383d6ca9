import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { createOutboxStore } from "../src/outbox-store.ts";
import { freshOutbox, linkTo } from "./support.ts";

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
    // The relay reaches the server through a link that can stop taking new connections while the one it
    // has stays up: what a client sees of a server on its way out (a restart, a failover).
    const { link, url: viaLink } = await linkTo(url, "relay→postgres");
    const relaySql = postgres(viaLink, { max: 1, onnotice: () => {} });
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
    link.stopListening();
    aborted.abort(new Error("the caller gave up"));
    await new Promise((r) => setTimeout(r, 200));
    await unlock();

    expect(await reading).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(unhandled).toEqual([]);
  });

  it("is not sent yet, its connection still connecting: left to run, and the pool stays usable", async () => {
    const { url } = await freshOutbox();
    // The pool's one connection cannot get through while the link is blackholed: the read waits in it.
    const { link, url: viaLink } = await linkTo(url, "relay→postgres");
    link.inject({ kind: "blackhole" });
    const relaySql = postgres(viaLink, { max: 1, onnotice: () => {} });
    onTestFinished(() => relaySql.end({ timeout: 1 }));
    const aborted = new AbortController();
    const early = createOutboxStore(relaySql).readBatch(10, aborted.signal);
    await new Promise((r) => setTimeout(r, 300));
    aborted.abort(new Error("the caller gave up"));
    link.heal();
    // Cancelled before it was sent, it left the connection unusable for good (postgres.js 3.4.10): this
    // query never got an answer.
    expect(await relaySql`select 2 as two`).toEqual([{ two: 2 }]);
    expect(await early).toEqual([]);
  });
});
