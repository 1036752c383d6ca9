import { type Summary, summarize } from "./stats.ts";

/** An order of a phase in its final state, read from order_db. */
export type FinishedOrder = { ms: number; doneAt: Date; canceledByRequest: boolean };

export type PhaseSagas = {
  /** Every saga of the phase that finished: the denominator of sagas/s and of every per-saga figure. */
  sagas: number;
  /** Sagas finished per second, from the phase's first request to its last final state. */
  sagasPerS: number;
  /** Created → final state, ms, of the sagas the client did not cancel. */
  latency: Summary;
};

/**
 * A phase's sagas, from its finished orders. A cancel by request is a finished saga (its compensation
 * ran, and its statements and CPU are in the phase's figures) and counts as one; only its latency is left
 * out: its last change is the DELETE, not the saga.
 */
export function phaseSagas(orders: FinishedOrder[], phase: { startedAt: Date; endedAt: Date }): PhaseSagas {
  const lastDone = orders.reduce((last, o) => Math.max(last, o.doneAt.getTime()), phase.endedAt.getTime());
  const busyS = (lastDone - phase.startedAt.getTime()) / 1000;
  return {
    sagas: orders.length,
    sagasPerS: orders.length / busyS,
    latency: summarize(orders.filter((o) => !o.canceledByRequest).map((o) => o.ms)),
  };
}
