-- Wakes the relay when outbox rows commit (relay/src/replication-wakeups.ts): its temporary logical
-- replication slot streams this publication. Inserts only, so the relay's own marking updates and
-- cleanup deletes are never streamed back to it. Streaming needs wal_level=logical; creating the
-- publication does not (PostgreSQL only warns), so this migration runs on any server.
CREATE PUBLICATION outbox_relay FOR TABLE outbox WITH (publish = 'insert');
