export {
  claimEvents,
  type InboxClaim,
  inTransaction,
  outboxArrays,
  type SqlClient,
  type SqlPool,
  type TxClient,
} from "./batch-sql.ts";
export { type Database, type Executor, lockAggregate } from "./db.ts";
export {
  type DeadLetterFilter,
  type DeadLetterRecord,
  findDeadLetter,
  listDeadLetters,
  type ReplayResult,
  replayDeadLetter,
} from "./dead-letters.ts";
export {
  envVars,
  kafkajsBrokers,
  kafkaSecurity,
  kafkaSecurityEnvVars,
  parseEnv,
  SERVICE_HTTP_DEFAULTS,
  type ServiceEnv,
  serviceEnvSchema,
  sessionTimeouts,
  statementTimeoutEnv,
} from "./env.ts";
export { classifyFailure, PoisonEventError } from "./errors.ts";
export { every, type Periodic } from "./housekeeping.ts";
export {
  type IdempotentResult,
  idempotent,
  requestFingerprint,
  type ScopedIdempotencyKey,
  type StoredResponse,
} from "./idempotency.ts";
export { newRowId } from "./ids.ts";
export {
  type AfterCommit,
  type BatchHandler,
  createInbox,
  type Inbox,
  type InboxConsumerOptions,
  type InboxOptions,
} from "./inbox.ts";
export { createMessagingMetrics, type MessagingMetrics } from "./metrics.ts";
export {
  appendOutbox,
  type DeadLetter,
  type NewOutboxRow,
  type OutboxEvent,
  type OutboxRow,
  outboxMessage,
  outboxRow,
  type PublishableRow,
} from "./outbox.ts";
export { createServiceRuntime, databaseFailure, type ServiceRuntime } from "./service.ts";
