import { describe, expect, it } from "vitest";
import { createApplier } from "./handling.ts";
import type { ConsumerOptions, DeadLetterCause, FailureKind, IncomingMessage } from "./port.ts";

const message = (value: string, offset = 0): IncomingMessage => ({
  topic: "t",
  partition: 0,
  offset: String(offset),
  key: "k",
  value,
  headers: {},
  timestamp: 0,
});

class Transient extends Error {}
class Poison extends Error {}
const classify = (err: unknown): FailureKind =>
  err instanceof Transient ? "transient" : err instanceof Poison ? "poison" : "unexpected";

/** An applier over `handle` with a 3-attempt budget and 1 ms back-off, recording what it did. */
function applier(handle: (m: IncomingMessage) => Promise<void>, overrides: Partial<ConsumerOptions> = {}) {
  const deadLetters: [string | null, DeadLetterCause][] = [];
  const retries: string[] = [];
  const ended: (string | null)[] = [];
  const stop = new AbortController();
  const options: ConsumerOptions = {
    groupId: "g",
    topics: ["t"],
    handle,
    classify,
    retry: { maxAttempts: 3, backoffMs: 1, maxBackoffMs: 2 },
    async deadLetter(m, cause) {
      deadLetters.push([m.value, cause]);
    },
    onRetry: (_m, _err, { kind }) => retries.push(kind),
    onRetriesEnded: (m) => ended.push(m.value),
    ...overrides,
  };
  const applyChunk = createApplier(options, stop.signal);
  // What the adapter's keepGoing says: false once the partition went to another member.
  const partition = { owned: true };
  const run = (...ms: IncomingMessage[]) =>
    applyChunk(
      ms,
      async () => {},
      () => partition.owned,
    );
  return { run, deadLetters, retries, ended, stop, partition };
}

describe("the failure contract of createApplier", () => {
  it("applies a message that succeeds, with no retry", async () => {
    const a = applier(async () => {});
    expect(await a.run(message("ok"))).toBe(1);
    expect(a.retries).toEqual([]);
    expect(a.ended).toEqual([]);
  });

  it("dead-letters poison at once, without a retry", async () => {
    const poison = new Poison("not JSON");
    const a = applier(async () => {
      throw poison;
    });
    expect(await a.run(message("p"))).toBe(1);
    expect(a.deadLetters).toEqual([["p", { reason: "poison", error: poison, attempts: 1 }]]);
    expect(a.retries).toEqual([]);
  });

  it("retries an unexpected error up to the budget, then dead-letters it with the last error", async () => {
    let calls = 0;
    const a = applier(async () => {
      throw new TypeError(`bug ${++calls}`);
    });
    expect(await a.run(message("b"), message("next", 1))).toBe(2);
    expect(calls).toBe(6);
    expect(a.deadLetters.map(([v, c]) => [v, c.reason, c.attempts, (c.error as Error).message])).toEqual([
      ["b", "retries exhausted", 3, "bug 3"],
      ["next", "retries exhausted", 3, "bug 6"],
    ]);
    expect(a.retries).toEqual(["unexpected", "unexpected", "unexpected", "unexpected"]);
    expect(a.ended).toEqual(["b", "next"]);
  });

  it("applies a message whose unexpected error went away within the budget (the fix was deployed)", async () => {
    let calls = 0;
    const a = applier(async () => {
      if (++calls < 3) throw new RangeError("not yet");
    });
    expect(await a.run(message("m"))).toBe(1);
    expect(a.deadLetters).toEqual([]);
    expect(a.ended).toEqual(["m"]);
  });

  it("retries transient failures without a budget, and they do not spend it", async () => {
    // 20 transient failures (an outage), then two unexpected ones, then success: never dead-lettered.
    let calls = 0;
    const a = applier(async () => {
      calls++;
      if (calls <= 20) throw new Transient("connection refused");
      if (calls <= 22) throw new Error("bug");
    });
    expect(await a.run(message("m"))).toBe(1);
    expect(calls).toBe(23);
    expect(a.deadLetters).toEqual([]);
    expect(a.retries.filter((k) => k === "transient")).toHaveLength(20);
    expect(a.retries.filter((k) => k === "unexpected")).toHaveLength(2);
  });

  it("never skips a message whose dead letter cannot be written: it retries until the record is durable", async () => {
    let writes = 0;
    const recorded: string[] = [];
    const a = applier(
      async () => {
        throw new Poison("bad envelope");
      },
      {
        async deadLetter(m) {
          if (++writes <= 3) throw new Transient("database down");
          recorded.push(m.value ?? "");
        },
      },
    );
    expect(await a.run(message("p"))).toBe(1);
    expect(writes).toBe(4);
    expect(recorded).toEqual(["p"]);
    expect(a.retries).toEqual(["transient", "transient", "transient"]);
  });

  it("gives up a message being retried when the consumer stops, without dead-lettering it", async () => {
    let calls = 0;
    const a = applier(
      async () => {
        if (++calls === 2) a.stop.abort();
        throw new Transient("down");
      },
      { retry: { maxAttempts: 1, backoffMs: 1, maxBackoffMs: 1 } },
    );
    expect(await a.run(message("m"), message("n", 1))).toBe(0);
    expect(a.deadLetters).toEqual([]);
    expect(a.ended).toEqual(["m"]);
  });

  it("gives up a message being retried once its partition went to another member, without dead-lettering it", async () => {
    // An unexpected error past the budget would be dead-lettered; the partition's new owner decides instead.
    let calls = 0;
    const a = applier(async () => {
      if (++calls === 2) a.partition.owned = false;
      throw new Error("bug");
    });
    expect(await a.run(message("m"), message("n", 1))).toBe(0);
    expect(calls).toBe(2);
    expect(a.deadLetters).toEqual([]);
    expect(a.ended).toEqual(["m"]);
  });
});
