-- Money the database itself refuses to get wrong, beside users_balance_non_negative:
-- - reservations_amount_positive: a RESERVED row of -100 credited its user 100 and still balanced the
--   ledger's arithmetic (balance = initial_balance - the RESERVED amounts). Every order's amount is at least 1
--   (orders_amount_positive, the events' schema), and a ledger row of any status carries its order's amount.
-- - users_balance_at_most_initial: only a reservation debits a balance and only its release, once, credits
--   back what it took (services/user-service/src/domain/reservation-plan.ts), so no balance rises above where
--   it started. With users_balance_non_negative it also keeps initial_balance from being negative; a check of
--   its own for that would never be the one to refuse a row (PostgreSQL tries them in name order).
-- NOT VALID: adding them reads no row, so the table's ACCESS EXCLUSIVE lock lasts a moment. The rows written
-- before are checked by migrateDatabase after the migrations' transaction commits (db/src/migrate.ts, which
-- names them in ADDED_NOT_VALID), in a transaction of its own that blocks neither reads nor writes: within
-- this one the lock would be held to its end, through the scan. Once this commits, both hold for every new
-- row and every update, those of older instances still running included.
ALTER TABLE "reservations" ADD CONSTRAINT "reservations_amount_positive" CHECK ("reservations"."amount" >= 1) NOT VALID;--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_balance_at_most_initial" CHECK ("users"."balance" <= "users"."initial_balance") NOT VALID;
