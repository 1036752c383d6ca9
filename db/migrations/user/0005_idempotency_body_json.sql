-- json, not jsonb: jsonb stores an object's keys in its own order (shortest first), so a replayed answer
-- read `{"id","amount","status","userId",…}` where the first one read `{"id","userId","amount",…}`. The
-- stored answer is written once and only ever read back whole, which is what json keeps as it was sent.
ALTER TABLE "idempotency_keys" ALTER COLUMN "body" SET DATA TYPE json USING "body"::json;
