export {
  type AdmissionOptions,
  type LaneKind,
  type LaneLimits,
  moveToLane,
  OVERLOADED_MESSAGE,
  requestLane,
  SHED_HEADER,
} from "./admission.ts";
export { type AppEnv, type BaseAppOptions, createBaseApp, requestTraceparent } from "./app.ts";
export { requestBody } from "./body-limit.ts";
export { AppError, type ErrorCode } from "./errors.ts";
export { type GradientLimitOptions } from "./gradient-limit.ts";
export { HEADROOM_HEADER, parseHeadroom } from "./headroom.ts";
export { callerSubject } from "./internal-credential.ts";
export { asGet, headLength, matchesRoute, methodNotAllowed, type RouteMethods } from "./methods.ts";
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
