/**
 * A level-triggered wake-up: `notify()` while nobody waits is remembered, so a wake-up that arrives
 * while a round is busy starts the next round at once instead of being lost.
 */
export function createWakeSignal() {
  let pending = false;
  let wakeWaiter: (() => void) | undefined;
  return {
    notify(): void {
      pending = true;
      wakeWaiter?.();
    },
    /** Forgets earlier wake-ups: call before a read that will see everything they announced. */
    clear(): void {
      pending = false;
    },
    /** Resolves on a wake-up, after `ms`, or when `abort` fires, whichever comes first. */
    wait(ms: number, abort?: AbortSignal): Promise<"woken" | "timeout" | "aborted"> {
      if (pending) {
        pending = false;
        return Promise.resolve("woken");
      }
      if (abort?.aborted) return Promise.resolve("aborted");
      return new Promise((resolve) => {
        const done = (how: "woken" | "timeout" | "aborted") => {
          clearTimeout(timer);
          abort?.removeEventListener("abort", onAbort);
          wakeWaiter = undefined;
          if (how === "woken") pending = false;
          resolve(how);
        };
        const onAbort = () => done("aborted");
        const timer = setTimeout(() => done("timeout"), ms);
        abort?.addEventListener("abort", onAbort, { once: true });
        wakeWaiter = () => done("woken");
      });
    },
  };
}
