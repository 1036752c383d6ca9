import { afterEach, describe, expect, it, vi } from "vitest";
import { createCommitCoalescer } from "./commits.ts";

function recorder(intervalMs: number) {
  const commits: [string, number][][] = [];
  const errors: unknown[] = [];
  const coalescer = createCommitCoalescer<number>({
    intervalMs,
    commit: async (offsets) => {
      commits.push(offsets);
    },
    onError: (err) => errors.push(err),
  });
  return { commits, errors, coalescer };
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
    b.coalescer.mark("t/0", 2);
    await b.coalescer.flush();
    expect(b.commits).toEqual([[["t/0", 1]], [["t/0", 2]]]);
  });

  it("forgets partitions no longer owned, and reports a failed commit without stopping", async () => {
    let fail = true;
    const errors: unknown[] = [];
    const commits: [string, number][][] = [];
    const coalescer = createCommitCoalescer<number>({
      intervalMs: 60_000,
      commit: async (offsets) => {
        if (fail) throw new Error("rebalancing");
        commits.push(offsets);
      },
      onError: (err) => errors.push(err),
    });
    coalescer.mark("t/0", 1);
    await coalescer.flush();
    expect(errors).toHaveLength(1);
    fail = false;
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

  it("sends a failed commit again after the interval, with nothing new marked", async () => {
    vi.useFakeTimers();
    let fail = true;
    const commits: [string, number][][] = [];
    const coalescer = createCommitCoalescer<number>({
      intervalMs: 200,
      commit: async (offsets) => {
        if (fail) throw new Error("rebalancing");
        commits.push(offsets);
      },
      onError: () => {},
    });
    coalescer.mark("t/0", 4);
    await vi.advanceTimersByTimeAsync(200);
    expect(commits).toEqual([]);
    fail = false;
    await vi.advanceTimersByTimeAsync(1000);
    expect(commits).toEqual([[["t/0", 4]]]);
    coalescer.close();
  });
});
