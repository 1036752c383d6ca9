export { type AppEnv, type BaseAppOptions, createBaseApp } from "./app.ts";
export { AppError, ERROR_STATUS, type ErrorCode } from "./errors.ts";
export { MAX_PREFER_WAIT_S, preferredWait } from "./prefer.ts";
export { serveUntilSignal } from "./serve.ts";
export { idempotencyKey, parseJsonBody, uuidParam } from "./validate.ts";
