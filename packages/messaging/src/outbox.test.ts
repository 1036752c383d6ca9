import { DLQ_HEADERS, HEADERS, TOPICS } from "@saga/contracts";
import { type IncomingMessage, messageBytes } from "@saga/kafka";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_DEAD_LETTER_MAX_BYTES,
  deadLetterRow,
  MIN_DEAD_LETTER_MAX_BYTES,
  type NewOutboxRow,
  outboxMessage,
  outboxRow,
} from "./outbox.ts";

const orderId = "3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11";
const userId = "b5a4e0f2-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("outboxRow", () => {
  it("stores the logical topic, the envelope columns and the Go version's exact JSON", () => {
    const row = outboxRow({
      topic: TOPICS.creditReservationFailed,
      aggregateId: orderId,
      // Key order and extra fields of the caller do not leak into the payload.
      payload: { reason: "INSUFFICIENT_FUNDS", amount: 5, userId, orderId, extra: 1 } as never,
      traceparent,
    });
    expect(row).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      aggregateId: orderId,
      topic: "user.credit-reservation-failed",
      eventType: "CreditReservationFailed",
      schemaVersion: "1",
      payload: `{"orderId":"${orderId}","userId":"${userId}","amount":5,"reason":"INSUFFICIENT_FUNDS"}`,
      headers: { traceparent },
    });
  });

  it("refuses a payload that breaks the contract, so the transaction fails", () => {
    expect(() =>
      outboxRow({
        topic: TOPICS.orderCreated,
        aggregateId: orderId,
        payload: { orderId, userId, amount: 0 },
      }),
    ).toThrow();
  });
});

describe("outboxMessage", () => {
  it("publishes under the prefix, keyed by the aggregate, with the envelope headers", () => {
    const row = outboxRow({
      topic: TOPICS.orderCreated,
      aggregateId: orderId,
      payload: { orderId, userId, amount: 1 },
      traceparent,
    });
    const createdAt = new Date("2026-11-25T06:08:33.123Z");
    const message = outboxMessage({ ...row, headers: row.headers ?? {}, createdAt }, "p.");
    expect(message).toEqual({
      topic: "p.order.created",
      key: orderId,
      value: row.payload,
      headers: {
        [HEADERS.eventId]: row.id,
        [HEADERS.eventType]: "OrderCreated",
        [HEADERS.schemaVersion]: "1",
        [HEADERS.occurredAt]: "2026-11-25T06:08:33.123Z",
        [HEADERS.aggregateId]: orderId,
        [HEADERS.traceparent]: traceparent,
      },
    });
  });
});

describe("deadLetterRow", () => {
  const message = (over: Partial<IncomingMessage> = {}): IncomingMessage => ({
    topic: "p.order.created",
    partition: 2,
    offset: "17",
    key: orderId,
    value: "{not json",
    headers: {
      [HEADERS.eventId]: "e-1",
      [HEADERS.eventType]: "OrderCreated",
      [HEADERS.traceparent]: traceparent,
    },
    timestamp: 0,
    ...over,
  });

  it("sends the raw value to <topic>.dlq, keyed as the original, with the error and its origin", () => {
    const row = deadLetterRow({
      message: message(),
      logicalTopic: "order.created",
      consumerGroup: "g",
      error: "bad",
      reason: "retries exhausted",
      attempts: 10,
    });
    expect(row).toMatchObject({
      topic: "order.created.dlq",
      aggregateId: orderId,
      eventType: "OrderCreated",
      payload: "{not json",
      headers: {
        [DLQ_HEADERS.reason]: "retries exhausted",
        [DLQ_HEADERS.attempts]: "10",
        [DLQ_HEADERS.error]: "bad",
        [DLQ_HEADERS.originalTopic]: "p.order.created",
        [DLQ_HEADERS.originalPartition]: "2",
        [DLQ_HEADERS.originalOffset]: "17",
        [DLQ_HEADERS.consumerGroup]: "g",
        [DLQ_HEADERS.originalEventId]: "e-1",
      },
    });
    // The trace of the message it gives up on, continued with a span of its own (the consumer's), as any
    // event a consumer writes does.
    expect(row.headers?.[HEADERS.traceparent]).toMatch(
      /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
    );
    expect(row.headers?.[HEADERS.traceparent]).not.toBe(traceparent);
  });

  it("stores anything PostgreSQL can hold, whatever the message carries", () => {
    const row = deadLetterRow({
      message: message({ key: null, value: null, headers: { [HEADERS.traceparent]: "garbage" } }),
      logicalTopic: "order.created",
      consumerGroup: "g",
      error: `nul \u0000 ${"x".repeat(5000)}`,
      reason: "poison",
      attempts: 1,
    });
    expect(row.aggregateId).toBe("p.order.created:2:17");
    expect(row.payload).toBe("");
    expect(row.eventType).toBe("Unknown");
    expect(row.headers?.[HEADERS.traceparent]).toBeUndefined();
    expect(row.headers?.[DLQ_HEADERS.error]).not.toContain("\u0000");
    expect(row.headers?.[DLQ_HEADERS.error]?.length).toBeLessThanOrEqual(2000);
  });
  /** The bytes of the message the relay sends for the row. */
  const sentBytes = (row: NewOutboxRow) =>
    messageBytes(outboxMessage({ ...row, headers: row.headers ?? {}, createdAt: new Date() }));

  it("keeps a value that fits whole, and says nothing of a cut", () => {
    const value = "v".repeat(100_000);
    const row = deadLetterRow({
      message: message({ value }),
      logicalTopic: "order.created",
      consumerGroup: "g",
      error: "not JSON",
      reason: "poison",
      attempts: 1,
    });
    expect(row.payload).toBe(value);
    expect(row.headers?.[DLQ_HEADERS.valueTruncated]).toBeUndefined();
  });

  it("cuts a value that does not fit to what its message may take, never half a character, and says how long it was", () => {
    // Megabytes once read: what another producer's compressed message can be.
    const value = `{"note":"${"é".repeat(1_000_000)}"}`;
    for (const maxBytes of [DEFAULT_DEAD_LETTER_MAX_BYTES, MIN_DEAD_LETTER_MAX_BYTES, 100_001]) {
      const row = deadLetterRow({
        message: message({ value }),
        logicalTopic: "order.created",
        consumerGroup: "g",
        error: "x".repeat(5000),
        reason: "poison",
        attempts: 1,
        maxBytes,
      });
      expect(row.headers?.[DLQ_HEADERS.valueTruncated]).toBe(String(Buffer.byteLength(value)));
      expect(value.startsWith(row.payload)).toBe(true);
      expect(sentBytes(row)).toBeLessThanOrEqual(maxBytes);
      expect(sentBytes(row)).toBeGreaterThan(maxBytes - 2);
    }
  });

  it("cuts the key and the envelope copied from a message that is no event, so the bound holds", () => {
    const long = "k".repeat(50_000);
    const row = deadLetterRow({
      message: message({
        key: long,
        value: "v".repeat(50_000),
        headers: {
          [HEADERS.eventId]: long,
          [HEADERS.eventType]: long,
          [HEADERS.schemaVersion]: long,
        },
      }),
      logicalTopic: "order.created",
      consumerGroup: "g",
      error: "bad",
      reason: "poison",
      attempts: 1,
      maxBytes: MIN_DEAD_LETTER_MAX_BYTES,
    });
    expect(row.aggregateId).toBe("k".repeat(256));
    expect(row.eventType).toHaveLength(256);
    expect(row.schemaVersion).toHaveLength(256);
    expect(row.headers?.[DLQ_HEADERS.originalEventId]).toHaveLength(256);
    expect(sentBytes(row)).toBeLessThanOrEqual(MIN_DEAD_LETTER_MAX_BYTES);
  });
});
