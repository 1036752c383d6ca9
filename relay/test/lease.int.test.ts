import { describe, expect, it, onTestFinished } from "vitest";
import { createLease } from "../src/lease.ts";
import { freshOutbox } from "./support.ts";

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
    const owned = await lease.tryAcquire();
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
});
