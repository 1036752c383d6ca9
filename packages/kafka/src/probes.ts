import { withTimeout } from "@saga/runtime";

/**
 * The probes behind /ready and the lag monitor, shared while in flight: callers of the same probe
 * (same key) while one is running wait for that one, each bounded by `timeoutMs` and its own signal, so
 * however often a broker that is away is probed, one request per probe is in flight. The key names
 * everything the answer depends on (a lag probe's group and topics).
 */
export function createProbes(timeoutMs: number) {
  const inFlight = new Map<string, Promise<unknown>>();
  return function probe<T>(
    key: string[],
    signal: AbortSignal | undefined,
    start: () => Promise<T>,
  ): Promise<T> {
    const what = `kafka ${key[0]}`;
    // A caller that has given up already starts nothing (withTimeout refuses it without waiting): a probe
    // started for nobody would fail later with no one to handle its rejection, which ends the process.
    if (signal?.aborted) return withTimeout(() => Promise.reject(signal.reason), timeoutMs, what, signal);
    const id = key.join("\0");
    let running = inFlight.get(id) as Promise<T> | undefined;
    if (!running) {
      running = start().finally(() => inFlight.delete(id));
      inFlight.set(id, running);
    }
    const shared = running;
    return withTimeout(() => shared, timeoutMs, what, signal);
  };
}
