import { describe, expect, it } from "vitest";
import { sleep } from "./sleep.ts";
import { TimeoutError, withTimeout } from "./timeout.ts";

describe("withTimeout", () => {
  it("answers what the work answers when it is in time", async () => {
    await expect(withTimeout(async () => 42, 1000, "answer")).resolves.toBe(42);
  });

  it("aborts the work's signal when the time is up, and rejects at that moment", async () => {
    let seen: AbortSignal | undefined;
    const never = withTimeout(
      (signal) => {
        seen = signal;
        return new Promise<never>(() => {});
      },
      20,
      "the database",
    );
    await expect(never).rejects.toThrow(new TimeoutError("the database did not answer within 20 ms"));
    expect(seen?.aborted).toBe(true);
    expect(seen?.reason).toBeInstanceOf(TimeoutError);
  });

  it("is cut short by its parent's deadline, and starts nothing once that has passed", async () => {
    const parent = new AbortController();
    let seen: AbortSignal | undefined;
    const running = withTimeout(
      (signal) => {
        seen = signal;
        return new Promise<never>(() => {});
      },
      60_000,
      "kafka",
      parent.signal,
    );
    parent.abort(new Error("stopping"));
    await expect(running).rejects.toThrow("kafka: cut short (stopping)");
    expect(seen?.aborted).toBe(true);

    let started = false;
    await expect(
      withTimeout(
        async () => {
          started = true;
        },
        1000,
        "late",
        parent.signal,
      ),
    ).rejects.toBeInstanceOf(TimeoutError);
    expect(started).toBe(false);
  });

  it("passes the work's own failure through", async () => {
    await expect(
      withTimeout(
        async () => {
          throw new Error("refused");
        },
        1000,
        "x",
      ),
    ).rejects.toThrow("refused");
  });
});

describe("sleep", () => {
  it("ends at once when its signal aborts, also when it already has", async () => {
    const controller = new AbortController();
    const sleeping = sleep(60_000, controller.signal);
    controller.abort();
    await sleeping;
    await sleep(60_000, controller.signal);
  });
});
