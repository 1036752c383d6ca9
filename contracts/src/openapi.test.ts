import { compileErrors, validate } from "@readme/openapi-parser";
import { describe, expect, it } from "vitest";
import { API_ROUTES } from "./api.ts";
import { createOpenApiDocument } from "./openapi.ts";

describe("the OpenAPI document", () => {
  const document = createOpenApiDocument();

  it("is a valid OpenAPI 3.1 document (the specification's schema, $refs, unique operation ids)", async () => {
    // As served (JSON), and a copy: validate() dereferences in place.
    const result = await validate(JSON.parse(JSON.stringify(document)));
    expect(result.valid, result.valid ? "" : compileErrors(result)).toBe(true);
    expect(result.warnings).toEqual([]);
    expect(document.openapi).toBe("3.1.0");
  });

  it("declares every route once, with its error body and the headers a client needs", () => {
    const operations = Object.entries(document.paths ?? {}).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(operations.sort()).toEqual(API_ROUTES.map((r) => `${r.method.toUpperCase()} ${r.path}`).sort());
    expect(operations).toEqual(
      expect.arrayContaining([
        "POST /users",
        "GET /users/{id}",
        "GET /users/{id}/orders",
        "POST /orders",
        "GET /orders",
        "GET /orders/{id}",
        "DELETE /orders/{id}",
        "GET /health",
        "GET /ready",
      ]),
    );
    const responses = document.components?.responses ?? {};
    expect(responses.Unavailable).toMatchObject({
      headers: { "Retry-After": expect.anything() },
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    });
    expect(responses.TooManyRequests).toMatchObject({ headers: { "Retry-After": expect.anything() } });
    expect(responses.Unauthorized).toMatchObject({ headers: { "WWW-Authenticate": { required: true } } });
    expect(document.components?.schemas?.Error).toMatchObject({
      properties: { error: { type: "string" }, requestId: { type: "string" } },
      required: ["error"],
    });
    const createOrder = document.paths?.["/orders"]?.post;
    expect(createOrder?.parameters?.map((p) => ("name" in p ? p.name : ""))).toEqual(
      expect.arrayContaining(["Idempotency-Key", "traceparent", "X-Request-Id"]),
    );
    const getOrder = document.paths?.["/orders/{id}"]?.get;
    expect(getOrder?.parameters?.map((p) => ("name" in p ? p.name : ""))).toContain("Prefer");
    expect(getOrder?.responses?.["200"]).toMatchObject({
      headers: { "Preference-Applied": expect.anything() },
    });
    expect(document.paths?.["/orders/{id}"]?.delete?.description).toMatch(/stays readable .* as CANCELED/);
  });

  it("links the saga: a created user to its orders, a created order to reading and canceling it", () => {
    const created = document.paths?.["/users"]?.post?.responses?.["201"];
    expect(Object.keys((created as { links: object }).links)).toEqual(
      expect.arrayContaining(["GetUser", "CreateOrder"]),
    );
    const ordered = document.paths?.["/orders"]?.post?.responses?.["201"];
    expect((ordered as { links: object }).links).toMatchObject({
      GetOrder: { operationId: "getOrder", parameters: { id: "$response.body#/id" } },
      CancelOrder: { operationId: "cancelOrder", parameters: { id: "$response.body#/id" } },
    });
  });
});
