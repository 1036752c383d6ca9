import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createLogger, createMetrics } from "@saga/observability";
import { Pool } from "undici";
import { afterEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { type AdmissionOptions, moveToLane, SHED_HEADER } from "./admission.ts";
import { createBaseApp } from "./app.ts";
import { matchesRoute } from "./methods.ts";
import { listen } from "./serve.ts";

function heldApp(
  limits: Partial<AdmissionOptions["limits"]> = {},
  queueTimeoutMs = 50,
  queueIntervalMs: number | undefined = undefined,
  options: Partial<AdmissionOptions> = {},
) {
  const metrics = createMetrics("test", "t1");
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics,
    ready: async () => {},
    admission: {
      limits: {
        read: { maxInFlight: 1, maxQueue: 0 },
        write: { maxInFlight: 1, maxQueue: 0 },
        wait: { maxInFlight: 10, maxQueue: 0 },
        ...limits,
      },
      queueTimeoutMs,
      queueIntervalMs,
      retryAfterS: 2,
      ...options,
    },
  });
  const holds: (() => void)[] = [];
  const hold = () => new Promise<void>((resolve) => holds.push(resolve));
  app.post("/things", async (c) => {
    await hold();
    return c.json({ written: true }, 201);
  });
  app.get("/things/:id", async (c) => {
    if (c.req.query("hold")) await hold();
    return c.json({ id: c.req.param("id") });
  });
  const releaseAll = () => {
    for (const release of holds.splice(0)) release();
  };
  return { app, metrics, releaseAll, holds };
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe("admission", () => {
  it("sheds a write past the bound with 503 + Retry-After as JSON, and still serves reads and health", async () => {
    const { app, metrics, releaseAll } = heldApp();
    const first = app.request("/things", { method: "POST" });
    await tick();
    const shed = await app.request("/things", { method: "POST" });
    expect(shed.status).toBe(503);
    expect(shed.headers.get("retry-after")).toBe("2");
    expect(await shed.json()).toMatchObject({
      error: "overloaded: too many requests in flight; retry later",
    });
    // Reads have their own lane; operators' paths none.
    expect((await app.request("/things/a")).status).toBe(200);
    expect((await app.request("/health")).status).toBe(200);
    expect((await app.request("/ready")).status).toBe(200);
    const text = await (await app.request("/metrics")).text();
    expect(text).toMatch(/http_admission_shed_total\{lane="write",[^}]*\} 1/);
    releaseAll();
    expect((await first).status).toBe(201);
  });

  it("marks its refusals for the proxy in front when asked to (a service behind the gateway)", async () => {
    const { app, releaseAll } = heldApp({}, 50, undefined, { markShed: true });
    const held = app.request("/things", { method: "POST" });
    await tick();
    const res = await app.request("/things", { method: "POST" });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("2");
    expect(res.headers.get(SHED_HEADER)).toBe("admission");
    releaseAll();
    expect((await held).status).toBe(201);
  });

  it("never lets polling reads starve writes", async () => {
    const { app, releaseAll } = heldApp();
    const read = app.request("/things/a?hold=1");
    await tick();
    expect((await app.request("/things/b")).status).toBe(503);
    const write = app.request("/things", { method: "POST" });
    await tick();
    releaseAll();
    expect((await write).status).toBe(201);
    expect((await read).status).toBe(200);
  });

  it("admits a queued request when a place frees within the queue timeout", async () => {
    const { app, releaseAll, holds } = heldApp({ write: { maxInFlight: 1, maxQueue: 1 } }, 1000);
    const first = app.request("/things", { method: "POST" });
    await tick();
    const queued = app.request("/things", { method: "POST" });
    await tick();
    expect((await app.request("/things", { method: "POST" })).status).toBe(503);
    releaseAll();
    expect((await first).status).toBe(201);
    while (holds.length === 0) await tick();
    releaseAll();
    expect((await queued).status).toBe(201);
  });

  it("puts long polls (Prefer: wait) on a route that holds them in a lane of their own", async () => {
    const { app, releaseAll } = heldApp({}, 50, undefined, { longPolls: matchesRoute("/orders/:id") });
    app.get("/orders/:id", (c) => c.json({ id: c.req.param("id") }));
    const read = app.request("/things/a?hold=1");
    await tick();
    // Every spelling that the services hold (preferredWait), not only the canonical one.
    for (const prefer of ["wait=5", "WAIT=5", "wait = 5", 'wait="5"', "respond-async, wait=5"]) {
      const poll = await app.request("/orders/b", { headers: { prefer } });
      expect(poll.status, prefer).toBe(200);
    }
    // A wait of 0 is answered at once: a read like any other, refused while the read lane is full.
    expect((await app.request("/orders/b", { headers: { prefer: "wait=0" } })).status).toBe(503);
    // A route that never holds answers at once whatever the client prefers: a read, shed at the read bound.
    expect((await app.request("/things/b", { headers: { prefer: "wait=5" } })).status).toBe(503);
    releaseAll();
    await read;
  });

  it("bounds a long poll by the read lane until its route holds it, and only then by the long polls' lane", async () => {
    const { app, metrics, releaseAll, holds } = heldApp(
      { read: { maxInFlight: 1, maxQueue: 0 }, wait: { maxInFlight: 1, maxQueue: 0 } },
      50,
      undefined,
      { markShed: true },
    );
    // As the order-service's GET /orders/:id: a read first, then held only when there is something to wait for.
    app.get("/polls/:id", async (c) => {
      if (c.req.query("pending")) {
        await moveToLane(c, "wait");
        await new Promise<void>((resolve) => holds.push(resolve));
      }
      return c.json({ id: c.req.param("id") });
    });
    const poll = (query = "") => app.request(`/polls/a${query}`, { headers: { prefer: "wait=5" } });
    const read = app.request("/things/a?hold=1");
    await tick();
    // Answered at once (nothing to wait for), it is a read like any other: shed while the read lane is full.
    const shed = await poll();
    expect(shed.status).toBe(503);
    expect(shed.headers.get("retry-after")).toBe("2");
    expect(shed.headers.get(SHED_HEADER)).toBe("admission");
    releaseAll();
    await read;

    // Held, it gives its read place back: reads go on beside it.
    const held = poll("?pending=1");
    await tick();
    expect((await app.request("/things/b")).status).toBe(200);
    const lanes = await metrics.registry.getSingleMetricAsString("http_admission_in_flight");
    expect(lanes).toMatch(/lane="wait",[^}]*\} 1/);
    expect(lanes).toMatch(/lane="read",[^}]*\} 0/);
    // The long polls' lane full: the next hold is shed, with the long polls' lane's reason.
    const refused = await poll("?pending=1");
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("2");
    expect(await metrics.registry.getSingleMetricAsString("http_admission_shed_total")).toMatch(
      /lane="wait",[^}]*\} 1/,
    );
    releaseAll();
    expect((await held).status).toBe(200);
    expect((await app.request("/things/c")).status).toBe(200);
  });

  it("takes no read for a long poll in an app whose routes hold none", async () => {
    const { app, releaseAll } = heldApp();
    const read = app.request("/things/a?hold=1");
    await tick();
    const res = await app.request("/things/b", { headers: { prefer: "wait=5" } });
    expect(res.status).toBe(503);
    expect(await (await app.request("/metrics")).text()).toMatch(
      /http_admission_shed_total\{lane="read",[^}]*\} 1/,
    );
    releaseAll();
    await read;
  });
});

describe("the queue: a burst waits, a standing queue sheds fast (CoDel)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });
  const fake = () =>
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setImmediate", "performance"] });
  const settled = (p: Response | Promise<Response>) => {
    const state: { status?: number } = {};
    Promise.resolve(p).then((r) => {
      state.status = r.status;
    });
    return state;
  };

  it("lets a request queued in a burst wait past the standing queue's timeout, up to the interval", async () => {
    fake();
    const { app, releaseAll, metrics } = heldApp({ write: { maxInFlight: 1, maxQueue: 4 } }, 20, 100);
    const first = app.request("/things", { method: "POST" });
    await vi.advanceTimersByTimeAsync(0);
    const queued = settled(app.request("/things", { method: "POST" }));
    // Three times the standing queue's timeout: a stall, not overload.
    await vi.advanceTimersByTimeAsync(60);
    expect(queued.status).toBeUndefined();
    releaseAll();
    await vi.advanceTimersByTimeAsync(0);
    releaseAll();
    await vi.advanceTimersByTimeAsync(0);
    expect((await first).status).toBe(201);
    expect(queued.status).toBe(201);
    const text = await (await app.request("/metrics")).text();
    expect(text).not.toMatch(/http_admission_shed_total\{lane="write"/);
  });

  /** A write lane of one place on fake timers; `releaseAll` lets every held and queued request finish. */
  function heldQueue(maxQueue: number, queueTimeoutMs: number, options: Partial<AdmissionOptions> = {}) {
    fake();
    const held = heldApp({ write: { maxInFlight: 1, maxQueue } }, queueTimeoutMs, 100, options);
    const post = () => held.app.request("/things", { method: "POST" });
    const releaseAll = async () => {
      for (let i = 0; i < 5; i++) {
        held.releaseAll();
        await vi.advanceTimersByTimeAsync(0);
      }
    };
    return { app: held.app, post, releaseAll };
  }

  /** One place, held; `a` queued at 0 ms and shed at 100 (the interval); `b` queued at 60: a queue standing at 110. */
  async function standingQueue(options: Partial<AdmissionOptions> = {}) {
    const held = heldQueue(4, 20, options);
    const { post } = held;
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const a = settled(post());
    await vi.advanceTimersByTimeAsync(60);
    const b = settled(post());
    await vi.advanceTimersByTimeAsync(50);
    // `a` waited the whole interval and was shed; `b` keeps the queue standing since the start.
    expect(a.status).toBe(503);
    expect(b.status).toBeUndefined();
    return { ...held, first, b };
  }

  it("sheds after the short timeout once the queue has not been empty for the interval, with its reason", async () => {
    const { app, post, first, b, releaseAll } = await standingQueue();
    const c = settled(post());
    await vi.advanceTimersByTimeAsync(25);
    // Queued into a standing queue: shed after 20 ms, before `b`, which was queued in the burst.
    expect(c.status).toBe(503);
    expect(b.status).toBeUndefined();
    await releaseAll();
    expect((await first).status).toBe(201);
    expect(b.status).toBe(201);
    const text = await (await app.request("/metrics")).text();
    expect(text).toMatch(/http_admission_shed_total\{lane="write",reason="timeout",[^}]*\} 2/);
  });

  it("takes a standing queue for a burst during the warm-up after a start: it waits the interval, not the timeout", async () => {
    const { post, first, b, releaseAll } = await standingQueue({ warmUpMs: 1000 });
    // Queued into the same standing queue, but within the first second: not shed after 20 ms.
    const c = settled(post());
    await vi.advanceTimersByTimeAsync(30);
    expect(c.status).toBeUndefined();
    await releaseAll();
    expect((await first).status).toBe(201);
    expect(b.status).toBe(201);
    expect(c.status).toBe(201);
  });

  it("never shortens a standing queue's wait during the warm-up when its timeout is the longer", async () => {
    const { post, releaseAll } = heldQueue(4, 300, { warmUpMs: 10_000 });
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const a = settled(post());
    await vi.advanceTimersByTimeAsync(150);
    // The queue has stood for 150 ms: `c` may wait the 300 ms timeout, not the 100 ms interval.
    const c = settled(post());
    await vi.advanceTimersByTimeAsync(120);
    expect(c.status).toBeUndefined();
    await releaseAll();
    expect((await first).status).toBe(201);
    expect(a.status).toBe(201);
    expect(c.status).toBe(201);
  });

  it("lets queued requests wait the warm-up's own time during the warm-up, and only then", async () => {
    const { post, releaseAll: release } = heldQueue(4, 20, { warmUpMs: 1000, warmUpQueueMs: 500 });
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const warm = settled(post());
    // Three times the interval: shed by now but for the warm-up.
    await vi.advanceTimersByTimeAsync(300);
    expect(warm.status).toBeUndefined();
    await release();
    expect((await first).status).toBe(201);
    expect(warm.status).toBe(201);

    // Past the warm-up and its easing (as long again), a burst waits the interval again.
    await vi.advanceTimersByTimeAsync(2000);
    const next = post();
    await vi.advanceTimersByTimeAsync(0);
    const late = settled(post());
    await vi.advanceTimersByTimeAsync(150);
    expect(late.status).toBe(503);
    await release();
    expect((await next).status).toBe(201);
  });

  it("eases the warm-up's wait down to the lane's own over as long again as the warm-up", async () => {
    // A warm-up of 1 s allowing 500 ms, then a burst's interval of 100 ms: halfway through the easing
    // (1.5 s after the start) a queued request may wait 300 ms.
    const { post, releaseAll: release } = heldQueue(4, 20, { warmUpMs: 1000, warmUpQueueMs: 500 });
    await vi.advanceTimersByTimeAsync(1500);
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const easing = settled(post());
    await vi.advanceTimersByTimeAsync(250);
    // Past the lane's own 100 ms and before the eased 300: still queued.
    expect(easing.status).toBeUndefined();
    await vi.advanceTimersByTimeAsync(100);
    expect(easing.status).toBe(503);
    await release();
    expect((await first).status).toBe(201);
  });

  it("eases the warm-up's queue length down to the lane's own as well", async () => {
    // A queue of one, five during the warm-up: halfway through the easing it holds three.
    const { post, releaseAll: release } = heldQueue(1, 20, { warmUpMs: 1000, warmUpMaxQueue: 5 });
    await vi.advanceTimersByTimeAsync(1500);
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const queued = [post(), post(), post()];
    expect((await post()).status).toBe(503);
    await release();
    expect((await first).status).toBe(201);
    expect((await Promise.all(queued)).map((r) => r.status)).toEqual([201, 201, 201]);
  });

  it("lets a lane's queue hold more during the warm-up, and only then", async () => {
    const { post, releaseAll: release } = heldQueue(1, 20, { warmUpMs: 1000, warmUpMaxQueue: 3 });
    const first = post();
    await vi.advanceTimersByTimeAsync(0);
    const queued = [post(), post(), post()];
    // The fourth finds the warm-up's queue of three full.
    expect((await post()).status).toBe(503);
    await release();
    expect((await first).status).toBe(201);
    expect((await Promise.all(queued)).map((r) => r.status)).toEqual([201, 201, 201]);

    await vi.advanceTimersByTimeAsync(2000);
    const next = post();
    await vi.advanceTimersByTimeAsync(0);
    const one = post();
    // Past the warm-up and its easing, the lane's own queue of one.
    expect((await post()).status).toBe(503);
    await release();
    expect((await next).status).toBe(201);
    expect((await one).status).toBe(201);
  });

  it("counts a request shed because the queue was full under its own reason", async () => {
    const { app, releaseAll } = heldApp();
    const first = app.request("/things", { method: "POST" });
    await tick();
    expect((await app.request("/things", { method: "POST" })).status).toBe(503);
    const text = await (await app.request("/metrics")).text();
    expect(text).toMatch(/http_admission_shed_total\{lane="write",reason="full",[^}]*\} 1/);
    releaseAll();
    await first;
  });
});

describe("adaptive admission (a proxy's lanes)", () => {
  function proxyApp(sampled?: AdmissionOptions["sampled"]) {
    const metrics = createMetrics("test", "t1");
    const app = createBaseApp({
      logger: createLogger("test", "silent"),
      metrics,
      ready: async () => {},
      admission: {
        limits: {
          read: { maxInFlight: 16, maxQueue: 0 },
          write: { maxInFlight: 16, maxQueue: 0 },
          wait: { maxInFlight: 10, maxQueue: 0 },
        },
        queueTimeoutMs: 50,
        retryAfterS: 1,
        adaptive: { minLimit: 2, tolerance: 5, baselineSamples: 1000 },
        sampled,
        longPolls: (path) => path === "/poll",
      },
    });
    const backend = { delayMs: 0, sheds: false, admissionSheds: false };
    // What a proxy answers itself, without its backend: a request without a token.
    app.post("/local", (c) => c.json({ error: "a bearer token is required" }, 401));
    app.post("/backend", async (c) => {
      await new Promise((r) => setTimeout(r, backend.delayMs));
      if (backend.admissionSheds)
        return c.json({ error: "no room" }, 503, { "retry-after": "1", [SHED_HEADER]: "admission" });
      if (backend.sheds) return c.json({ error: "backend sheds" }, 503, { "retry-after": "1" });
      return c.json({ ok: true }, 201);
    });
    const burst = async (n: number) =>
      (await Promise.all(Array.from({ length: n }, () => app.request("/backend", { method: "POST" })))).map(
        (r) => r.status,
      );
    const limit = async () => {
      const text = await (await app.request("/metrics")).text();
      return Number(/http_admission_limit\{lane="write",[^}]*\} (\S+)/.exec(text)?.[1]);
    };
    return { app, backend, burst, limit };
  }

  it("learns its backend's latency only from the answers that say something of it", async () => {
    const { app, backend, burst, limit } = proxyApp((c) => c.req.path !== "/local");
    backend.delayMs = 20;
    await burst(1);
    for (let round = 0; round < 60 && (await limit()) < 16; round++) await burst(Math.ceil(await limit()));
    expect(await limit()).toBe(16);
    // A flood of answers the proxy makes itself, in microseconds, in the same lane.
    for (let i = 0; i < 50; i++)
      await Promise.all(Array.from({ length: 100 }, () => app.request("/local", { method: "POST" })));
    // The backend as fast as before: nothing here is queueing, and the bound stays where it was.
    for (let i = 0; i < 5; i++) expect(await burst(16)).toEqual(Array(16).fill(201));
    expect(await limit()).toBe(16);
  });

  it("keeps the long polls' lane at its bound: a held request's time is its wait, not its backend's queue", async () => {
    const { app } = proxyApp();
    const polls: { release: () => void }[] = [];
    app.get("/poll", async (c) => {
      await new Promise<void>((release) => polls.push({ release }));
      return c.json({ ok: true });
    });
    const poll = () => app.request("/poll", { headers: { prefer: "wait=30" } });
    // Held long, a poll at a time: an adaptive bound would take them for a backend that slowed down.
    for (let i = 0; i < 5; i++) {
      const answer = poll();
      await tick();
      await new Promise((r) => setTimeout(r, 50));
      for (const p of polls.splice(0)) p.release();
      expect((await answer).status).toBe(200);
    }
    // All ten places of the lane (its minimum would be 2).
    const answers = Array.from({ length: 10 }, poll);
    await tick();
    for (const p of polls.splice(0)) p.release();
    expect((await Promise.all(answers)).map((r) => r.status)).toEqual(Array(10).fill(200));
  });

  it("lowers a lane's bound as its backend slows down, shedding the excess here, and raises it again", async () => {
    const { backend, burst, limit } = proxyApp();
    // A baseline of fast answers (some may be shed while it forms: the first answers are the slowest).
    for (let i = 0; i < 40; i++) await burst(16);
    backend.delayMs = 200;
    for (let i = 0; i < 3; i++) await burst(16);
    expect(await limit()).toBeLessThan(8);
    const slow = await burst(16);
    expect(slow.filter((s) => s === 503).length).toBeGreaterThanOrEqual(8);
    backend.delayMs = 0;
    // Answers on time while the lane is full raise the bound again, up to its maximum.
    for (let round = 0; round < 40 && (await limit()) < 16; round++) await burst(Math.ceil(await limit()));
    expect(await limit()).toBe(16);
    expect(await burst(16)).toEqual(Array(16).fill(201));
  });

  it("backs off when the backend's admission refuses for want of room, however fast it answers, and passes no mark on", async () => {
    const { app, backend, burst, limit } = proxyApp();
    await burst(1);
    for (let round = 0; round < 60 && (await limit()) < 16; round++) await burst(Math.ceil(await limit()));
    expect(await limit()).toBe(16);
    backend.admissionSheds = true;
    await burst(8);
    // Eight refusals: 16 × 0.9^8 ≈ 6.9.
    expect(await limit()).toBeLessThan(8);
    const res = await app.request("/backend", { method: "POST" });
    expect(res.status).toBe(503);
    expect(res.headers.get(SHED_HEADER)).toBeNull();
  });

  it("does not take a backend's own shedding (503 + Retry-After, answered fast) as a reason to lower the bound", async () => {
    const { backend, burst, limit } = proxyApp();
    // A lane starts at its floor, and answers on time with the lane full raise it.
    await burst(1);
    expect(await limit()).toBeLessThan(3);
    for (let round = 0; round < 60 && (await limit()) < 16; round++) await burst(Math.ceil(await limit()));
    expect(await limit()).toBe(16);
    backend.sheds = true;
    for (let i = 0; i < 10; i++) await burst(16);
    expect(await limit()).toBe(16);
  });
});

describe("a burst through HTTP: judged by its wait, not its count", () => {
  /**
   * A read lane of one place and a queue of two (a thousand in a burst), served on a port: the route holds
   * every read until `releaseAll`. Waits are far longer than the test takes but for the interval, after
   * which a queue that was not empty is standing.
   */
  async function servedLane() {
    const { app, releaseAll, holds } = heldApp({ read: { maxInFlight: 1, maxQueue: 2 } }, 30_000, 300, {
      burstMaxQueue: 1000,
    });
    const server = await new Promise<Server>((resolve) => {
      const s: Server = listen({ app, port: 0 }, () => resolve(s));
    });
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const pool = new Pool(origin, { connections: 64 });
    onTestFinished(async () => {
      releaseAll();
      await pool.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    const queued = async () =>
      Number(
        (await (await app.request("/metrics")).text()).match(
          /http_admission_queued\{lane="read"[^}]*\} (\d+)/,
        )?.[1] ?? 0,
      );
    /** Sends `n` held reads at once; each settles into `answers` as its answer comes. */
    const reads = (n: number, answers: { status: number; retryAfter: unknown }[]) =>
      Array.from({ length: n }, async (_, i) => {
        const res = await pool.request({ path: `/things/${i}?hold=1`, method: "GET" });
        await res.body.dump();
        answers.push({ status: res.statusCode, retryAfter: res.headers["retry-after"] });
      });
    return { releaseAll, holds, queued, reads };
  }

  it("answers every read of a burst on an idle lane, past its queue's count, once places free", async () => {
    const { releaseAll, holds, queued, reads } = await servedLane();
    const answers: { status: number; retryAfter: unknown }[] = [];
    const burst = reads(50, answers);
    // Every read of the burst has arrived: one holds the place, the others queued or answered.
    await vi.waitFor(async () => expect(holds.length + (await queued()) + answers.length).toBe(50), {
      timeout: 10_000,
      interval: 20,
    });
    while (answers.length < 50) {
      releaseAll();
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(burst);
    expect(answers.map((a) => a.status)).toEqual(Array(50).fill(200));
  });

  it("still refuses at once, 503 + Retry-After, what a standing queue cannot hold", async () => {
    const { releaseAll, holds, queued, reads } = await servedLane();
    const first: { status: number; retryAfter: unknown }[] = [];
    const before = reads(2, first);
    await vi.waitFor(async () => expect([holds.length, await queued()]).toEqual([1, 1]), {
      timeout: 10_000,
      interval: 20,
    });
    // The queue has not been empty for longer than its interval: overload, no longer a burst.
    await new Promise((r) => setTimeout(r, 400));
    const answers: { status: number; retryAfter: unknown }[] = [];
    const more = reads(20, answers);
    // One more fits the queue of two; the others are refused while the lane's place is still held.
    await vi.waitFor(() => expect(answers).toHaveLength(19), { timeout: 10_000, interval: 20 });
    expect(answers.every((a) => a.status === 503 && a.retryAfter === "2")).toBe(true);
    expect(first).toHaveLength(0);
    while (first.length + answers.length < 22) {
      releaseAll();
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all([...before, ...more]);
    expect(first.map((a) => a.status)).toEqual([200, 200]);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
  });
});
