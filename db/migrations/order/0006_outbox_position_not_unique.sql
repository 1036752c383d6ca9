-- `position` comes from its sequence, so it is unique without an index, and nothing looks a row up by it:
-- the relay reads the unpublished rows through outbox_unpublished_idx, the cleanup through
-- outbox_published_at_idx. The unique index was written on every insert and on every mark (a mark is not
-- a HOT update): 500-row inserts and marks ran 13% and 15% faster without it, with 7–9% less WAL a row
-- (bench/README.md, session 38). Dropping it rewrites nothing.
ALTER TABLE "outbox" DROP CONSTRAINT "outbox_position_unique";
