import type { Sql } from "postgres";
import { createOutboxStore, type OutboxStore, type OutboxStoreOptions } from "../src/outbox-store.ts";

const defect = () => new TypeError("Cannot read properties of undefined (reading 'topic')");

/**
 * An outbox store with a defect: it throws a TypeError, as a bug would, on the first batch that has rows,
 * when it reads it (the table mode) or, for a batch the replication stream carried (RELAY_MODE=cdc), when
 * it marks it.
 */
export function defectiveStore(sql: Sql, options?: OutboxStoreOptions): OutboxStore {
  const store = createOutboxStore(sql, options);
  return {
    ...store,
    async readBatch(limit, signal) {
      const rows = await store.readBatch(limit, signal);
      if (rows.length > 0) throw defect();
      return rows;
    },
    async markPublished(ids, sinceAck, signal) {
      if (ids.length > 0) throw defect();
      return store.markPublished(ids, sinceAck, signal);
    },
  };
}
