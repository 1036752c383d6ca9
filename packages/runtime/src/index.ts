export { createLingerGate } from "./linger.ts";
export { sleep } from "./sleep.ts";
export { TimeoutError, withTimeout } from "./timeout.ts";
