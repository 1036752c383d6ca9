-- The prune (packages/messaging/src/housekeeping.ts) deletes the keys older than INBOX_RETENTION_HOURS in
-- batches. With only the primary key (subject, key), each round's last batch, the one that finds few keys or
-- none, read the whole table: 70 ms with a million keys (0.8 ms through this index), so with the tens of
-- millions a retention of keyed requests leaves it ran past DB_STATEMENT_TIMEOUT_MS (10 s), and from then on
-- every round failed and the table only grew.
-- Plain CREATE INDEX, not CONCURRENTLY: drizzle runs the pending migrations in one transaction, where
-- CONCURRENTLY cannot run. It blocks writes to idempotency_keys (a POST with an Idempotency-Key) while it
-- reads the table once, about 0.16 s a million keys; reads go on. On a large table, create it CONCURRENTLY
-- by hand first (IF NOT EXISTS then skips it).
CREATE INDEX IF NOT EXISTS "idempotency_keys_created_at_idx" ON "idempotency_keys" USING btree ("created_at");
