import { DrizzleQueryError } from "drizzle-orm/errors";
import { describe, expect, it } from "vitest";
import { databaseFailure } from "./service.ts";

const withCode = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("databaseFailure", () => {
  it("answers a read that lost its database 503, and leaves other failures alone", () => {
    for (const method of ["GET", "HEAD"]) {
      expect(databaseFailure(new Error("Connection terminated unexpectedly"), method)?.status).toBe(503);
      expect(databaseFailure(new Error("Query read timeout"), method)?.status).toBe(503);
      expect(databaseFailure(withCode("57P01"), method)?.status).toBe(503);
      expect(databaseFailure(withCode("58030", "could not read block 0"), method)?.status).toBe(503);
      expect(databaseFailure(withCode("53200", "out of memory"), method)?.status).toBe(503);
    }
    expect(databaseFailure(new TypeError("bug"), "GET")).toBeUndefined();
    expect(databaseFailure(new TypeError("bug"), "POST")).toBeUndefined();
    expect(databaseFailure(withCode("23505"), "POST")).toBeUndefined();
  });

  it.each([
    ["a refused connection", withCode("ECONNREFUSED")],
    ["no pool client in time", new Error("timeout exceeded when trying to connect")],
    ["a connect that timed out", new Error("Connection terminated due to connection timeout")],
    ["too many connections", withCode("53300")],
    ["a server still starting", withCode("57P03")],
    ["a statement timeout", withCode("57014", "canceling statement due to statement timeout")],
    ["a serialization failure", withCode("40001")],
    ["a deadlock", withCode("40P01")],
    ["drizzle's wrapper around a deadlock", new DrizzleQueryError("commit", [], withCode("40P01"))],
    ["a read-only server", withCode("25006", "cannot execute INSERT in a read-only transaction")],
    ["a full disk", withCode("53100", "could not extend file: No space left on device")],
    ["a server out of memory", withCode("53200")],
    ["an I/O error", withCode("58030")],
    ["drizzle's wrapper around a full disk", new DrizzleQueryError("insert", [], withCode("53100"))],
  ])("answers a write that changed nothing, %s, 503", (_what, error) => {
    const answer = databaseFailure(error, "POST");
    expect(answer?.status).toBe(503);
    expect(answer?.message).toBe("the database is unavailable; retry later");
  });

  it.each([
    ["node-postgres losing its connection", new Error("Connection terminated unexpectedly")],
    ["a reset socket", withCode("ECONNRESET")],
    ["a broken pipe", withCode("EPIPE")],
    ["the server shutting down", withCode("57P01")],
    [
      "drizzle's ROLLBACK on the client whose COMMIT was lost",
      new DrizzleQueryError(
        "rollback",
        [],
        new Error("Client has encountered a connection error and is not queryable"),
      ),
    ],
  ])("answers a write whose answer was lost, %s, 502: it may have been applied", (_what, error) => {
    for (const method of ["POST", "DELETE"]) {
      const answer = databaseFailure(error, method);
      expect(answer?.status).toBe(502);
      expect(answer?.message).toBe(
        "the database connection was lost before it answered: the request may have been applied (send it again with the same Idempotency-Key)",
      );
      expect(answer?.retryAfterS).toBeUndefined();
    }
  });

  it("answers a write the database did not answer in time 504: it may have been applied", () => {
    const answer = databaseFailure(
      new DrizzleQueryError("insert", [], new Error("Query read timeout")),
      "POST",
    );
    expect(answer?.status).toBe(504);
    expect(answer?.message).toBe(
      "the database did not answer in time: the request may have been applied (send it again with the same Idempotency-Key)",
    );
  });
});
