import { describe, expect, it } from "vitest";
import { newRowId } from "./ids.ts";
import { outboxRow } from "./outbox.ts";

describe("newRowId", () => {
  it("makes version 7 UUIDs that sort in the order they were made, as an index keeps them", () => {
    const ids = Array.from({ length: 10_000 }, newRowId);
    for (const id of ids)
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(ids.length);
    // PostgreSQL orders uuids byte by byte, which for lower-case hex is the order of the text.
    expect([...ids].sort()).toEqual(ids);
  });

  it("is the id of every outbox row, and so the event id the inbox keys on", () => {
    const made = [1, 2, 3].map(
      (amount) =>
        outboxRow({
          topic: "order.created",
          aggregateId: "00000000-0000-4000-8000-000000000001",
          payload: {
            orderId: "00000000-0000-4000-8000-000000000001",
            userId: "00000000-0000-4000-8000-000000000002",
            amount,
          },
        }).id,
    );
    expect([...made].sort()).toEqual(made);
    for (const id of made) expect(id[14]).toBe("7");
  });
});
