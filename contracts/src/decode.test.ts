import { describe, expect, it } from "vitest";
import { decodeEvent } from "./decode.ts";
import { CreateOrderRequest, CreateUserRequest } from "./http.ts";
import { ALL_TOPICS, dlqTopic, TOPICS } from "./topics.ts";

const orderId = "3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11";
const userId = "b5a4e0f2-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

function headersFor(eventType: string, extra: Record<string, string> = {}) {
  return {
    "event-id": "0d9a3c2e-5f6b-4a7c-8d9e-1f2a3b4c5d6e",
    "event-type": eventType,
    "schema-version": "1",
    "occurred-at": "2026-11-25T06:08:33.123Z",
    "aggregate-id": orderId,
    ...extra,
  };
}

describe("decodeEvent", () => {
  it("accepts the exact JSON the Go version emits", () => {
    const value = `{"orderId":"${orderId}","userId":"${userId}","amount":1000}`;
    const result = decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated"), value);
    expect(result).toEqual({
      ok: true,
      event: {
        topic: "order.created",
        envelope: headersFor("OrderCreated"),
        payload: { orderId, userId, amount: 1000 },
      },
    });
  });

  it("requires a reason on credit-reservation-failed", () => {
    const value = JSON.stringify({ orderId, userId, amount: 5 });
    const headers = headersFor("CreditReservationFailed");
    expect(decodeEvent(TOPICS.creditReservationFailed, headers, value)).toMatchObject({ ok: false });
    const withReason = JSON.stringify({ orderId, userId, amount: 5, reason: "INSUFFICIENT_FUNDS" });
    expect(decodeEvent(TOPICS.creditReservationFailed, headers, withReason)).toMatchObject({
      ok: true,
      event: { payload: { reason: "INSUFFICIENT_FUNDS" } },
    });
  });

  it.each([
    ["unknown", "CARD_DECLINED"],
    ["in lower case", "insufficient_funds"],
    ["NUL", "\u0000"],
  ])(
    "rejects a credit-reservation-failed whose reason is %s, which no order may be canceled with",
    (_name, reason) => {
      const value = JSON.stringify({ orderId, userId, amount: 5, reason });
      const headers = headersFor("CreditReservationFailed");
      expect(decodeEvent(TOPICS.creditReservationFailed, headers, value)).toMatchObject({
        ok: false,
        error: /reason/,
      });
    },
  );

  it("carries a traceparent as it came, a malformed one too: the consumer ignores it, the event is no poison", () => {
    const value = JSON.stringify({ orderId, userId, amount: 1 });
    for (const traceparent of ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-zz-00-01"])
      expect(
        decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated", { traceparent }), value),
      ).toMatchObject({
        ok: true,
        event: { envelope: { traceparent } },
      });
  });

  it("reads the ids of a payload written in capitals in lower case, as the databases write them", () => {
    const value = JSON.stringify({ orderId: orderId.toUpperCase(), userId: userId.toUpperCase(), amount: 1 });
    expect(decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated"), value)).toMatchObject({
      ok: true,
      event: { payload: { orderId: orderId.toLowerCase(), userId: userId.toLowerCase() } },
    });
  });

  it.each([
    ["not JSON", "{orderId:", /not JSON/],
    ["empty", null, /empty/],
    ["amount zero", JSON.stringify({ orderId, userId, amount: 0 }), /amount/],
    ["negative amount", JSON.stringify({ orderId, userId, amount: -1 }), /amount/],
    ["fractional amount", JSON.stringify({ orderId, userId, amount: 1.5 }), /amount/],
    ["amount as string", JSON.stringify({ orderId, userId, amount: "10" }), /amount/],
    ["unsafe integer", `{"orderId":"${orderId}","userId":"${userId}","amount":9007199254740993}`, /amount/],
    ["bad uuid", JSON.stringify({ orderId: "42", userId, amount: 1 }), /orderId/],
    ["missing userId", JSON.stringify({ orderId, amount: 1 }), /userId/],
  ])("rejects a payload that is %s", (_name, value, error) => {
    const result = decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated"), value);
    expect(result).toMatchObject({ ok: false, error });
  });

  it("rejects a missing or wrong envelope", () => {
    const value = JSON.stringify({ orderId, userId, amount: 1 });
    expect(
      decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated", { "schema-version": "2" }), value),
    ).toMatchObject({ ok: false, error: /schema-version/ });
    expect(
      decodeEvent(TOPICS.orderCreated, headersFor("OrderCreated", { "aggregate-id": userId }), value),
    ).toMatchObject({ ok: false, error: /aggregate-id .* is not the payload's orderId/ });
    const { "event-id": _, ...noId } = headersFor("OrderCreated");
    expect(decodeEvent(TOPICS.orderCreated, noId, value)).toMatchObject({ ok: false, error: /event-id/ });
    expect(decodeEvent(TOPICS.orderCreated, headersFor("OrderCanceled"), value)).toMatchObject({
      ok: false,
      error: /does not belong/,
    });
  });
});

describe("topics", () => {
  it("names the four event topics and their dead-letter topics", () => {
    expect(ALL_TOPICS).toEqual([
      "order.created",
      "order.canceled",
      "user.credit-reserved",
      "user.credit-reservation-failed",
      "order.created.dlq",
      "order.canceled.dlq",
      "user.credit-reserved.dlq",
      "user.credit-reservation-failed.dlq",
    ]);
    expect(dlqTopic(TOPICS.orderCanceled)).toBe("order.canceled.dlq");
  });
});

describe("HTTP requests", () => {
  it("accepts the Go version's bodies", () => {
    expect(CreateUserRequest.parse({ username: "alice", initialBalance: 5000 })).toEqual({
      username: "alice",
      initialBalance: 5000,
    });
    expect(CreateOrderRequest.parse({ userId, amount: 1000 })).toEqual({ userId, amount: 1000 });
  });

  it.each([{ amount: 0 }, { amount: -1 }, { amount: 1.5 }, { amount: "10" }, {}])(
    "rejects an order with %o",
    (body) => {
      expect(CreateOrderRequest.safeParse({ userId, ...body }).success).toBe(false);
    },
  );

  it("rejects a negative or fractional initial balance and an empty username", () => {
    expect(CreateUserRequest.safeParse({ username: "a", initialBalance: -1 }).success).toBe(false);
    expect(CreateUserRequest.safeParse({ username: "a", initialBalance: 0.5 }).success).toBe(false);
    expect(CreateUserRequest.safeParse({ username: " ", initialBalance: 1 }).success).toBe(false);
    expect(CreateUserRequest.safeParse({ username: "a", initialBalance: 0 }).success).toBe(true);
  });

  it("rejects a username with a control character, NUL included (PostgreSQL text cannot hold it)", () => {
    for (const username of ["\u0000", "a\u0000b", "a\tb", "a\u007f"])
      expect(CreateUserRequest.safeParse({ username, initialBalance: 1 }).success).toBe(false);
    expect(CreateUserRequest.safeParse({ username: "zoë ✓", initialBalance: 1 }).success).toBe(true);
  });
});
