/**
 * The saga's throughput that the backlog bound is sized by (backpressure.ts): the most sagas finished in
 * one span of `spanMs`, the best the saga has shown since it last ran late. Spans of several seconds,
 * because the consumers apply answers in batches (up to 64 in one transaction), and one second's count
 * would take a batch for a rate.
 *
 * Only late sagas make it forget: a quiet spell says nothing of what the saga can do (as BBR's estimate of
 * a path's bandwidth is not lowered by samples the application limited), but a saga that took longer than
 * the target says that the rate remembered is not there now (a user-service lost, a path gone slow, or a
 * backlog past what the bound admitted). Then what was shown before it is forgotten as a windowed maximum
 * forgets: for the `spans` spans after the last late saga the rate is the best of the window, and after
 * them only what the saga has shown since, so that it follows a saga that slows down, a saga that has
 * stopped (late, and finishing nothing) brings it to none within that window, and a quiet spell that
 * follows a slow-down keeps the slow rate, not the one before it.
 *
 * Pure: the clock is `now` (milliseconds, monotonic).
 */
export function createSagaRate(opts: { spanMs: number; spans: number; now: () => number }) {
  const { spanMs, spans, now } = opts;
  // Sagas finished in each span of the window, by span (a ring).
  const finishedIn = new Array<number>(spans).fill(0);
  const spanOf = new Array<number>(spans).fill(Number.NEGATIVE_INFINITY);
  const spanNow = () => Math.floor(now() / spanMs);
  // The most sagas finished in one span since the saga last ran late (in that span, counted whole).
  let best = 0;
  // The span in which a saga last ran late, and the first span of that run of late sagas (each within the
  // window of the one before it).
  let lateSpan = Number.NEGATIVE_INFINITY;
  let lateSince = Number.NEGATIVE_INFINITY;
  /** The most sagas finished in one span of the window. */
  const bestOfWindow = () => {
    const current = spanNow();
    let most = 0;
    for (let i = 0; i < spans; i++)
      if (current - (spanOf[i] ?? Number.NEGATIVE_INFINITY) < spans)
        most = Math.max(most, finishedIn[i] ?? 0);
    return most;
  };
  return {
    /** `n` sagas finished now. */
    finished(n: number) {
      const span = spanNow();
      const at = span % spans;
      if (spanOf[at] !== span) {
        spanOf[at] = span;
        finishedIn[at] = 0;
      }
      finishedIn[at] = (finishedIn[at] ?? 0) + n;
      best = Math.max(best, finishedIn[at]);
    },
    /** A saga ran late: what was shown before now is forgotten once the window has passed. */
    late() {
      const span = spanNow();
      if (span - lateSpan >= spans) lateSince = span;
      lateSpan = span;
      // What the saga has shown while it runs late, in the spans of the window.
      best = 0;
      for (let i = 0; i < spans; i++) {
        const of = spanOf[i] ?? Number.NEGATIVE_INFINITY;
        if (of >= lateSince && span - of < spans) best = Math.max(best, finishedIn[i] ?? 0);
      }
    },
    /** Sagas finished per second. */
    perSecond: () => {
      const shown = spanNow() - lateSpan < spans ? Math.max(best, bestOfWindow()) : best;
      return (shown * 1000) / spanMs;
    },
  };
}
