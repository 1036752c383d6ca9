export {
  type AdmissionOptions,
  admission,
  isLongPoll,
  type LaneKind,
  type LaneLimits,
  moveToLane,
  OVERLOADED_MESSAGE,
  requestLane,
  SHED_HEADER,
} from "./admission.ts";
export { type AppEnv, type BaseAppOptions, createBaseApp, requestTraceparent } from "./app.ts";
export { bodyLimit, requestBody } from "./body-limit.ts";
export { AppError, ERROR_STATUS, type ErrorCode } from "./errors.ts";
export { GradientLimit, type GradientLimitOptions } from "./gradient-limit.ts";
export { HEADROOM_HEADER, parseHeadroom } from "./headroom.ts";
export { callerSubject, type InternalCredentialOptions, internalCredential } from "./internal-credential.ts";
export {
  allowedMethods,
  asGet,
  headLength,
  matchesRoute,
  methodNotAllowed,
  methodNotAllowedResponse,
  type RouteMethods,
  registeredRoutes,
} from "./methods.ts";
export { MAX_PREFER_WAIT_S, preferredWait } from "./prefer.ts";
export { listen, serveUntilSignal } from "./serve.ts";
export {
  envMillis,
  httpEnvDefaults,
  httpEnvVars,
  httpSettings,
  MAX_TIMER_MS,
  parseEnv,
  type ServerLimits,
} from "./settings.ts";
export { idempotencyKey, parseJsonBody, uuidParam } from "./validate.ts";
