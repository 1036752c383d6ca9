import { afterEach, describe, expect, it, vi } from "vitest";
import { createCommitCoalescer } from "./commits.ts";

/**
 * A coalescer whose commits are recorded, or fail while `broker.failing` (a rebalance), or never answer
 * while `broker.silent`; `broker.held` holds the next commits until `release(fail)` fails them or lets them
 * through.
 */
function recorder(intervalMs: number, timeoutMs?: number) {
  const commits: [string, number][][] = [];
  const errors: unknown[] = [];
  const broker = { failing: false, silent: false, held: false };
  const holds: ((fail: boolean) => void)[] = [];
  const coalescer = createCommitCoalescer<number>({
    intervalMs,
    timeoutMs,
    commit: async (offsets) => {
      if (broker.silent) return new Promise<void>(() => {});
      if (broker.held && (await new Promise<boolean>((r) => holds.push(r)))) throw new Error("rebalancing");
      if (broker.failing) throw new Error("rebalancing");
      commits.push(offsets);
    },
    onError: (err) => errors.push(err),
  });
  const release = (fail: boolean) => {
    for (const hold of holds.splice(0)) hold(fail);
  };
  return { commits, errors, coalescer, broker, release };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("createCommitCoalescer", () => {
  it("sends the latest offset of each partition in one commit, once the interval has passed", async () => {
    vi.useFakeTimers();
    const { commits, coalescer } = recorder(200);
    coalescer.mark("t/0", 5);
    coalescer.mark("t/1", 3);
    coalescer.mark("t/0", 9);
    await vi.advanceTimersByTimeAsync(199);
    expect(commits).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(commits).toEqual([
      [
        ["t/0", 9],
        ["t/1", 3],
      ],
    ]);
    coalescer.close();
  });

  it("sends at once when flushed, and with an interval of 0 on every mark", async () => {
    const a = recorder(60_000);
    a.coalescer.mark("t/0", 1);
    await a.coalescer.flush();
    expect(a.commits).toEqual([[["t/0", 1]]]);
    await a.coalescer.flush();
    expect(a.commits).toHaveLength(1);

    const b = recorder(0);
    b.coalescer.mark("t/0", 1);
    await b.coalescer.flush();
    b.coalescer.mark("t/0", 2);
    await b.coalescer.flush();
    expect(b.commits).toEqual([[["t/0", 1]], [["t/0", 2]]]);
  });

  it("forgets partitions no longer owned, and reports a failed commit without stopping", async () => {
    const { commits, errors, coalescer, broker } = recorder(60_000);
    broker.failing = true;
    coalescer.mark("t/0", 1);
    await coalescer.flush();
    expect(errors).toHaveLength(1);
    broker.failing = false;
    coalescer.mark("t/0", 2);
    coalescer.mark("t/1", 7);
    coalescer.retain((p) => p === "t/1");
    await coalescer.flush();
    expect(commits).toEqual([[["t/1", 7]]]);
    coalescer.close();
    coalescer.mark("t/1", 8);
    await coalescer.flush();
    expect(commits).toHaveLength(1);
  });

  it("never sends a failed offset again behind a newer one of its partition marked while it was in flight", async () => {
    vi.useFakeTimers();
    const { commits, coalescer, broker, release } = recorder(60_000);
    broker.held = true;
    coalescer.mark("t/0", 100);
    const first = coalescer.flush();
    await vi.advanceTimersByTimeAsync(0);
    coalescer.mark("t/0", 120);
    const second = coalescer.flush();
    broker.held = false;
    release(true); // the first fails: a broker away, a rebalance
    await first;
    await second;
    await vi.advanceTimersByTimeAsync(60_000); // the failed commit's own retry, had it kept one
    expect(commits).toEqual([[["t/0", 120]]]);
    coalescer.close();
  });

  it("goes on committing after a commit that never answers", async () => {
    vi.useFakeTimers();
    const { commits, errors, coalescer, broker } = recorder(60_000, 5000);
    broker.silent = true;
    coalescer.mark("t/0", 1);
    const stuck = coalescer.flush();
    await vi.advanceTimersByTimeAsync(0);
    broker.silent = false;
    coalescer.mark("t/0", 2);
    const next = coalescer.flush();
    await vi.advanceTimersByTimeAsync(5000);
    await stuck;
    await next;
    expect(errors).toEqual([expect.objectContaining({ name: "TimeoutError" })]);
    expect(commits).toEqual([[["t/0", 2]]]);
    coalescer.close();
  });

  it("sends a failed commit again after the interval, with nothing new marked", async () => {
    vi.useFakeTimers();
    const { commits, coalescer, broker } = recorder(200);
    broker.failing = true;
    coalescer.mark("t/0", 4);
    await vi.advanceTimersByTimeAsync(200);
    expect(commits).toEqual([]);
    broker.failing = false;
    await vi.advanceTimersByTimeAsync(1000);
    expect(commits).toEqual([[["t/0", 4]]]);
    coalescer.close();
  });
});
