import { describe, expect, it } from "vitest";
import { createSagaRate } from "./saga-rate.ts";

/** A rate of 5-second spans, a window of six, on a clock the test moves. */
function rateOnClock() {
  let ms = 0;
  const rate = createSagaRate({ spanMs: 5000, spans: 6, now: () => ms });
  return { rate, pass: (seconds: number) => (ms += seconds * 1000) };
}

describe("createSagaRate", () => {
  it("is the most sagas finished in one span, per second", () => {
    const { rate, pass } = rateOnClock();
    expect(rate.perSecond()).toBe(0);
    rate.finished(100);
    rate.finished(50);
    pass(5);
    rate.finished(400);
    pass(5);
    rate.finished(200);
    expect(rate.perSecond()).toBe(80);
  });

  it("keeps it through a quiet spell of any length", () => {
    const { rate, pass } = rateOnClock();
    rate.finished(2500);
    pass(3600);
    expect(rate.perSecond()).toBe(500);
    // A few sagas after the quiet spell do not lower it either: the demand was low, not the saga.
    rate.finished(3);
    expect(rate.perSecond()).toBe(500);
  });

  it("falls to the best of the window once a saga ran late", () => {
    const { rate, pass } = rateOnClock();
    rate.finished(2500);
    pass(10);
    rate.finished(1000);
    pass(10);
    rate.late();
    // 2,500 twenty seconds ago is still within the window of 30 s.
    expect(rate.perSecond()).toBe(500);
    // Fifteen seconds on, it is not, and 1,000 is.
    pass(15);
    rate.late();
    expect(rate.perSecond()).toBe(200);
    // Once the window has passed the late saga, only what the saga has shown since counts: nothing.
    pass(600);
    expect(rate.perSecond()).toBe(0);
  });

  it("keeps the rate of a slow-down, not the one before it, through the quiet spell after it", () => {
    const { rate, pass } = rateOnClock();
    // Ten minutes at 500 a second, then 23 s at 100 a second, every saga late, then nothing for an hour.
    for (let s = 0; s < 600; s++) {
      rate.finished(500);
      pass(1);
    }
    for (let s = 0; s < 23; s++) {
      rate.finished(100);
      rate.late();
      pass(1);
    }
    // Within the window of the last late saga, the window's best: the spans before the slow-down are in it.
    expect(rate.perSecond()).toBe(500);
    pass(3600);
    expect(rate.perSecond()).toBe(100);
  });

  it("falls to none when the saga ran late and finished nothing within the window (a saga that has stopped)", () => {
    const { rate, pass } = rateOnClock();
    rate.finished(2500);
    pass(60);
    rate.late();
    expect(rate.perSecond()).toBe(0);
    rate.finished(250);
    expect(rate.perSecond()).toBe(50);
  });
});
