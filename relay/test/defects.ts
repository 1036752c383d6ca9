import type { Sql } from "postgres";
import { createOutboxStore, type OutboxStore } from "../src/outbox-store.ts";

/** An outbox store with a defect: it throws a TypeError, as a bug would, on the first batch that has rows. */
export function defectiveStore(sql: Sql): OutboxStore {
  const store = createOutboxStore(sql);
  return {
    ...store,
    async readBatch(limit, signal) {
      const rows = await store.readBatch(limit, signal);
      if (rows.length > 0) throw new TypeError("Cannot read properties of undefined (reading 'topic')");
      return rows;
    },
  };
}
