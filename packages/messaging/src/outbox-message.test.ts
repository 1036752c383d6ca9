import { DLQ_HEADERS, HEADERS } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import { outboxMessage, type PublishableRow } from "./outbox.ts";

const row: PublishableRow = {
  id: "4f1c1b0e-8a53-4a8e-9d6c-2b1d3f4e5a6b",
  aggregateId: "9b2e7c1a-0d4f-4e5b-8a6c-7d8e9f0a1b2c",
  topic: "order.created",
  eventType: "OrderCreated",
  schemaVersion: "1",
  payload:
    '{"orderId":"9b2e7c1a-0d4f-4e5b-8a6c-7d8e9f0a1b2c","userId":"00000000-0000-4000-8000-000000000000","amount":5}',
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  createdAt: new Date("2026-01-02T03:04:05.678Z"),
};

describe("outboxMessage for the relay", () => {
  it("keys by aggregate, prefixes the topic and carries the envelope", () => {
    expect(outboxMessage(row, "dev.")).toEqual({
      topic: "dev.order.created",
      key: row.aggregateId,
      value: row.payload,
      headers: {
        [HEADERS.traceparent]: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        [HEADERS.eventId]: row.id,
        [HEADERS.eventType]: "OrderCreated",
        [HEADERS.schemaVersion]: "1",
        [HEADERS.occurredAt]: "2026-01-02T03:04:05.678Z",
        [HEADERS.aggregateId]: row.aggregateId,
      },
    });
  });

  it("never lets the headers column override the envelope", () => {
    const m = outboxMessage({ ...row, headers: { [HEADERS.eventId]: "forged", "dlq-error": "boom" } }, "");
    expect(m.headers[HEADERS.eventId]).toBe(row.id);
    expect(m.headers["dlq-error"]).toBe("boom");
  });

  it("sends a replayed dead letter back with its own envelope, the event id of the original", () => {
    const original = {
      [HEADERS.eventId]: "0d5b7a40-2f0e-4a53-9e57-3c1f1c9b8a11",
      [HEADERS.eventType]: "OrderCreated",
      [HEADERS.schemaVersion]: "1",
      [HEADERS.occurredAt]: "2025-12-31T23:59:59.000Z",
      [HEADERS.aggregateId]: row.aggregateId,
    };
    const m = outboxMessage(
      { ...row, headers: { ...original, [DLQ_HEADERS.replayOf]: "dead-letter-id" } },
      "",
    );
    expect(m.headers).toEqual({ ...original, [DLQ_HEADERS.replayOf]: "dead-letter-id" });
    expect(m.key).toBe(row.aggregateId);
  });

  it("makes a malformed headers column fit instead of blocking the outbox", () => {
    expect(outboxMessage({ ...row, headers: "oops" as never }, "").headers).not.toHaveProperty("0");
    expect(outboxMessage({ ...row, headers: { n: 1, gone: null } as never }, "").headers).toMatchObject({
      n: "1",
    });
  });
});
