/** A bounded call that did not finish in time, or a deadline that passed while it ran. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/**
 * Runs `work` with a signal that aborts after `ms` (never when it is `Infinity`), or as soon as `parent` aborts (a stop's deadline),
 * and rejects with a `TimeoutError` at that moment. A callee that takes the signal stops its work there
 * (a query is cancelled, a request abandoned, a connection closed); one that does not is at least no
 * longer waited for, so pass the signal wherever the callee accepts one.
 */
export async function withTimeout<T>(
  work: (signal: AbortSignal) => Promise<T>,
  ms: number,
  what: string,
  parent?: AbortSignal,
): Promise<T> {
  if (parent?.aborted) throw new TimeoutError(`${what}: not started (${describeReason(parent.reason)})`);
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onParentAbort: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    const stop = (error: TimeoutError) => {
      controller.abort(error);
      reject(error);
    };
    onParentAbort = () => stop(new TimeoutError(`${what}: cut short (${describeReason(parent?.reason)})`));
    if (Number.isFinite(ms))
      timer = setTimeout(() => stop(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms);
    parent?.addEventListener("abort", onParentAbort, { once: true });
  });
  try {
    return await Promise.race([expired, work(controller.signal)]);
  } finally {
    clearTimeout(timer);
    if (onParentAbort) parent?.removeEventListener("abort", onParentAbort);
  }
}

function describeReason(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason ?? "aborted");
}
