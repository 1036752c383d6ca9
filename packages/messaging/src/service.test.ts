import { describe, expect, it } from "vitest";
import { unavailableWhenRetriable } from "./service.ts";

describe("unavailableWhenRetriable", () => {
  it("turns a lost database connection into a 503 and leaves other failures alone", () => {
    expect(unavailableWhenRetriable(new Error("Connection terminated unexpectedly"))?.status).toBe(503);
    expect(unavailableWhenRetriable(Object.assign(new Error("x"), { code: "57P01" }))?.status).toBe(503);
    expect(unavailableWhenRetriable(new TypeError("bug"))).toBeUndefined();
  });
});
