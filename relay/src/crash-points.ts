import type { CrashPoint } from "./env.ts";

/**
 * Test only (RELAY_TEST_CRASH_AT): kills this process with SIGKILL the `occurrence`-th time a batch
 * reaches `point`, so the crash tests stop a relay at an exact step instead of guessing with timers.
 * Without the variable the relay gets no hook at all.
 */
export function crashAt({
  point,
  occurrence,
}: {
  point: CrashPoint;
  occurrence: number;
}): (at: CrashPoint) => void {
  let seen = 0;
  return (at) => {
    if (at !== point || ++seen < occurrence) return;
    process.kill(process.pid, "SIGKILL");
  };
}
