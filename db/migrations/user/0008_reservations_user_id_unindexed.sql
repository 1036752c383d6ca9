-- Nothing reads reservations by user_id: the user-service finds a reservation by its order (the primary key,
-- apply-reservation-batch.ts), and the chaos checker reads them all. The index was still written by every
-- saga's reservation, an entry for a random user, so at a random leaf page of an index as large as the table's
-- history.
-- Plain DROP INDEX, not CONCURRENTLY: drizzle runs the pending migrations in one transaction, where
-- CONCURRENTLY cannot run. It takes the ACCESS EXCLUSIVE lock of reservations, so the user-service's batches
-- wait until that transaction commits; dropping reads nothing. To avoid even that, drop it CONCURRENTLY by hand
-- first (DROP INDEX CONCURRENTLY reservations_user_id_idx): IF EXISTS then skips it (docs/design.md,
-- "Upgrading"). An older user-service still running needs it no more than this one.
DROP INDEX IF EXISTS "reservations_user_id_idx";
