import { createOpenApiDocument } from "@saga/contracts/openapi";
import { describe, expect, it } from "vitest";
import { createResponseValidator } from "./conformance.ts";

// The checker of the system's conformance test (openapi.test.ts), against the real document: it must
// refuse what the document does not declare, or that test could not fail.
const { check } = createResponseValidator(JSON.parse(JSON.stringify(createOpenApiDocument())));
const ID = "3f1c7a52-9d1e-4c8e-a0a4-7f7b0c5d2e11";
const order = { id: ID, userId: ID, amount: 10, status: "PENDING", createdAt: "2026-01-01T00:00:00.000Z" };
const res = (status: number, body: unknown, headers: Record<string, string> = {}) => ({
  status,
  headers: new Headers(body === undefined ? headers : { "content-type": "application/json", ...headers }),
  body: body === undefined ? "" : JSON.stringify(body),
});

describe("the response validator", () => {
  it("accepts declared answers", () => {
    expect(check("GET", `/orders/${ID}`, res(200, order, { "preference-applied": "wait=5" }))).toEqual([]);
    expect(check("POST", "/orders", res(201, order))).toEqual([]);
    expect(check("GET", `/orders?userId=${ID}`, res(200, [order, order]))).toEqual([]);
    const user = { id: ID, username: "ada", balance: 1, createdAt: order.createdAt };
    const cursor = `1740823200.000133_${ID}`;
    const link = { link: `</users/${ID}/orders?limit=1&after=${cursor}>; rel="next"` };
    expect(
      check("GET", `/users/${ID}/orders`, res(200, { user, orders: [order], next: cursor }, link)),
    ).toEqual([]);
    expect(check("GET", `/users/${ID}/orders`, res(200, { user, orders: [order] }))).toEqual([
      expect.stringMatching(/must have required property 'next'/),
    ]);
    expect(check("DELETE", `/orders/${ID}`, res(204, undefined))).toEqual([]);
    expect(
      check("POST", "/orders", res(503, { error: "shed", requestId: "r" }, { "retry-after": "1" })),
    ).toEqual([]);
    expect(
      check(
        "GET",
        "/users/x",
        res(401, { error: "no" }, { "www-authenticate": 'Bearer realm="outbox-saga"' }),
      ),
    ).toEqual([]);
  });

  it.each([
    ["an undeclared status", "DELETE", `/orders/${ID}`, res(409, { error: "x" }), /status not declared/],
    ["a body off its schema", "GET", `/orders/${ID}`, res(200, { ...order, status: "LOST" }), /status/],
    ["a missing field", "GET", `/orders/${ID}`, res(200, { id: ID }), /must have required property/],
    [
      "an error without its message",
      "POST",
      "/orders",
      res(400, { message: "x" }),
      /required property 'error'/,
    ],
    [
      "another content type",
      "GET",
      `/users/${ID}`,
      res(404, "x", { "content-type": "text/plain" }),
      /content type/,
    ],
    ["a body where none is declared", "DELETE", `/orders/${ID}`, res(204, {}), /without content/],
    [
      "a 401 without its challenge",
      "GET",
      `/users/${ID}`,
      res(401, { error: "x" }),
      /WWW-Authenticate missing/,
    ],
    [
      "a header off its schema",
      "POST",
      "/orders",
      res(429, { error: "x" }, { "retry-after": "soon" }),
      /Retry-After/,
    ],
    ["an undeclared operation", "PUT", `/orders/${ID}`, res(200, order), /no such operation/],
  ])("refuses %s", (_what, method, url, response, problem) => {
    expect(check(method, url, response).join("\n")).toMatch(problem);
  });
});
