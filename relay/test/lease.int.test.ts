import { describe, expect, it, onTestFinished } from "vitest";
import { createLease } from "../src/lease.ts";
import { eventually, freshOutbox, linkTo } from "./support.ts";

/** Blocks this thread, timers and I/O included, as a long GC pause or a SIGSTOP would. */
function stall(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe("the lease", () => {
  it("confirms a healthy owner's lock without asking, and finds a stalled owner's lock gone", async () => {
    const { url } = await freshOutbox();
    // The server ends the lock session after 1 s without a statement; the heartbeat asks every 200 ms.
    const lease = createLease({ url, holderName: "lease-test", heartbeatMs: 200, serverIdleTimeoutMs: 1000 });
    onTestFinished(() => lease.release());
    const owned = await lease.acquire(1000);
    if (!owned) throw new Error("the lease was not acquired");

    await new Promise((r) => setTimeout(r, 1500));
    await lease.confirm();
    expect(owned.aborted, "kept by its heartbeat past idle_session_timeout").toBe(false);

    // Stalled past idle_session_timeout: the server has ended the session, but nothing of it was read.
    stall(2000);
    expect(owned.aborted, "not known yet when the stall ends").toBe(false);
    await lease.confirm();
    expect(owned.aborted, "known once confirmed").toBe(true);
    expect(String(owned.reason)).toMatch(/lease lost/);
  });

  it("has ended its session, and with it the lock, once release() resolves", async () => {
    const { url, sql } = await freshOutbox();
    // The lease reaches the server through a link that can turn slow, as a loaded server or network would:
    // its goodbye then arrives well after release() was called.
    const { link, url: viaLink } = await linkTo(url, "lease→postgres");
    const lease = createLease({ url: viaLink, holderName: "lease-released" });
    if (!(await lease.acquire(1000))) throw new Error("the lease was not acquired");
    const holders = () => sql<{ pid: number }[]>`
      select l.pid from pg_locks l join pg_stat_activity a using (pid)
      where l.locktype = 'advisory' and l.granted and a.application_name = 'lease-released'`;
    expect(await holders(), "held before release()").toHaveLength(1);

    link.inject({ kind: "latency", ms: 200 });
    await lease.release();
    expect(await holders(), "the lock after release()").toEqual([]);
  });

  it("a standby waiting on the server gets the lock when the owner's session ends, and a stop ends its wait", async () => {
    const { url, sql } = await freshOutbox();
    const owner = createLease({ url, holderName: "lease-owner" });
    const standby = createLease({ url, holderName: "lease-standby" });
    const other = createLease({ url, holderName: "lease-other" });
    onTestFinished(async () => {
      await Promise.all([owner.release(), standby.release(), other.release()]);
    });
    if (!(await owner.acquire(1000))) throw new Error("the owner did not get the lock");
    const waits = () => sql<{ holder: string }[]>`
      select a.application_name as holder from pg_locks l join pg_stat_activity a using (pid)
      where l.locktype = 'advisory' and not l.granted and a.datname = current_database()`;

    // Asked once, the lock is refused; waited for, it is granted as soon as the owner gives it up.
    expect(await standby.acquire(100)).toBeUndefined();
    const waiting = standby.acquire(60_000);
    await eventually("the standby to wait", async () => (await waits()).length === 1, 5000);
    expect((await waits())[0]?.holder).toBe("lease-standby");
    await owner.release();
    const owned = await waiting;
    expect(owned?.aborted).toBe(false);

    // Another one waits behind it; stopped, its wait ends on the server and it owns nothing.
    const stop = new AbortController();
    const stopped = other.acquire(60_000, stop.signal);
    await eventually("the other to wait", async () => (await waits()).length === 1, 5000);
    stop.abort();
    expect(await stopped).toBeUndefined();
    await eventually("its wait to end", async () => (await waits()).length === 0, 5000);
    expect(owned?.aborted).toBe(false);
  });

  it("waits past its session's statement timeout, and survives its connection dropping mid-wait", async () => {
    const { url, sql } = await freshOutbox();
    // The session's statements may take 1 s; the wait sets 5 s for itself. (A wait's client-side bound is
    // its own time plus the session's: 300 ms of slack was too little for a run that shares its cores with
    // the other packages' suites, where the client gave up before the server's refusal came.)
    const owner = createLease({ url, holderName: "lease-owner", timeoutMs: 1000 });
    const standby = createLease({ url, holderName: "lease-standby", timeoutMs: 1000 });
    onTestFinished(async () => {
      await Promise.all([owner.release(), standby.release()]);
    });
    if (!(await owner.acquire(1000))) throw new Error("the owner did not get the lock");
    const waiting = standby.acquire(5000);
    await new Promise((r) => setTimeout(r, 1500));
    await owner.release();
    expect((await waiting)?.aborted).toBe(false);
    await standby.release();

    // A wait that runs out its time is not acquired, and keeps its session for the next one.
    const backendOf = async (holder: string) =>
      (await sql<{ pid: number }[]>`select pid from pg_stat_activity where application_name = ${holder}`)[0]
        ?.pid;
    if (!(await owner.acquire(1000))) throw new Error("the owner did not get the lock back");
    expect(await standby.acquire(500)).toBeUndefined();
    const waitedOn = await backendOf("lease-standby");
    expect(waitedOn).toBeDefined();
    expect(await standby.acquire(500)).toBeUndefined();
    expect(await backendOf("lease-standby")).toBe(waitedOn);

    // Its backend ended while it waits (a restart, a failover): not acquired, and the next wait works.
    const dropped = standby.acquire(5000);
    const backend = async () =>
      (
        await sql<{ pid: number }[]>`
          select pid from pg_stat_activity where application_name = 'lease-standby' and wait_event = 'advisory'`
      )[0]?.pid;
    const pid = await eventually("the standby to wait", backend, 5000);
    await sql`select pg_terminate_backend(${pid})`;
    expect(await dropped).toBeUndefined();
    const again = standby.acquire(5000);
    await eventually("the standby to wait again", backend, 5000);
    await owner.release();
    expect((await again)?.aborted).toBe(false);
  });
});
