export { type AppEnv, type BaseAppOptions, createBaseApp } from "./app.ts";
export { AppError, ERROR_STATUS, type ErrorCode } from "./errors.ts";
export { callerSubject, type InternalCredentialOptions, internalCredential } from "./internal-credential.ts";
export { serveUntilSignal } from "./serve.ts";
export { idempotencyKey, parseJsonBody, uuidParam } from "./validate.ts";
