export { type DeadLetterReason, deadLetters, idempotencyKeys, outbox } from "./common.ts";
export { type ConnectionOptions, connectionOptions, postgresJsOptions } from "./connection.ts";
export { connectionLifetime } from "./lifetime.ts";
export {
  lastKnownMigration,
  type MigrationReport,
  migrateDatabase,
  type ServiceDatabase,
} from "./migrate.ts";
export * as orderSchema from "./order-schema.ts";
export {
  createPgDatabase,
  DEFAULT_POOL_MAX,
  DEFAULT_POOL_MAX_LIFETIME_S,
  mustDiscardClient,
  type PgDatabase,
  type PgDatabaseOptions,
} from "./pg-client.ts";
export { sessionParameters } from "./session.ts";
export {
  CLIENT_TIMEOUT_MARGIN_MS,
  clientQueryTimeoutMs,
  DEFAULT_SESSION_TIMEOUTS,
  type SessionTimeouts,
} from "./timeouts.ts";
export * as userSchema from "./user-schema.ts";
