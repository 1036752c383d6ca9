import { DrizzleQueryError } from "drizzle-orm/errors";
import { describe, expect, it } from "vitest";
import { classifyFailure, describeError, isRetriableError, PoisonEventError } from "./errors.ts";

const withCode = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("isRetriableError", () => {
  it.each([
    ["a serialization failure", withCode("40001")],
    ["a deadlock", withCode("40P01")],
    ["an admin shutdown (server restart)", withCode("57P01")],
    ["a server still starting", withCode("57P03")],
    ["any connection exception (class 08)", withCode("08006")],
    ["too many connections", withCode("53300")],
    ["a full disk", withCode("53100")],
    ["a server out of memory", withCode("53200")],
    ["a configuration limit (temp_file_limit)", withCode("53400")],
    ["any insufficient resources (class 53)", withCode("53000")],
    ["an I/O error", withCode("58030")],
    ["any system error (class 58)", withCode("58000")],
    ["a write refused by a read-only server (a demoted primary)", withCode("25006")],
    ["a closed postgres.js connection", withCode("CONNECTION_CLOSED")],
    ["a refused socket", withCode("ECONNREFUSED")],
    ["a reset socket", withCode("ECONNRESET")],
    ["an error that says so itself (kafkajs)", Object.assign(new Error("x"), { retriable: true })],
    [
      "drizzle's wrapper around a lost connection",
      new DrizzleQueryError("select 1", [], withCode("CONNECTION_ENDED") as Error),
    ],
    ["node-postgres losing its connection", new Error("Connection terminated unexpectedly")],
    [
      "node-postgres reusing a broken client",
      new Error("Client has encountered a connection error and is not queryable"),
    ],
    ["node-postgres waiting too long for a connection", new Error("timeout exceeded when trying to connect")],
    [
      "drizzle's wrapper around a rollback on a dead connection",
      new DrizzleQueryError("rollback", [], new Error("Connection terminated unexpectedly")),
    ],
    [
      "an aggregate of connection attempts",
      Object.assign(new AggregateError([withCode("ECONNREFUSED")]), {}),
    ],
  ])("retries %s", (_what, error) => {
    expect(isRetriableError(error)).toBe(true);
  });

  it.each([
    ["a unique violation", withCode("23505")],
    ["a check violation", withCode("23514")],
    ["a syntax error", withCode("42601")],
    ["another invalid transaction state (class 25)", withCode("25001")],
    ["a plain bug", new TypeError("x is undefined")],
    ["a query on an ended pool", new Error("Cannot use a pool after calling end on the pool")],
    ["a poison event", new PoisonEventError("bad payload")],
    ["something that is not an error", "boom"],
    ["null", null],
  ])("does not retry %s", (_what, error) => {
    expect(isRetriableError(error)).toBe(false);
  });

  it("survives a cause cycle", () => {
    const a = new Error("a") as Error & { cause?: unknown };
    const b = new Error("b", { cause: a });
    a.cause = b;
    expect(isRetriableError(a)).toBe(false);
  });
});

describe("classifyFailure: the consumers' failure contract", () => {
  it.each([
    ["a bad envelope or payload", new PoisonEventError("event-id: Invalid UUID")],
    ["poison wrapped by a caller", new Error("apply failed", { cause: new PoisonEventError("no handler") })],
  ])("dead-letters %s at once (poison)", (_what, error) => {
    expect(classifyFailure(error)).toBe("poison");
  });

  it.each([
    ["a refused connection (database down)", withCode("ECONNREFUSED")],
    ["a server restarting", withCode("57P01")],
    ["a lost node-postgres connection", new Error("Connection terminated unexpectedly")],
    ["a serialization failure", withCode("40001")],
    ["a statement timeout (a stalled server)", withCode("57014")],
    ["a session cut off idle in its transaction", withCode("25P03")],
    ["a lock timeout", withCode("55P03")],
    ["a full disk", withCode("53100")],
    ["a server out of memory", withCode("53200")],
    ["an I/O error", withCode("58030")],
    ["a read-only server (a failover, a switchover, a provider's full-disk guard)", withCode("25006")],
    ["drizzle's wrapper around a full disk", new DrizzleQueryError("insert", [], withCode("53100") as Error)],
    [
      "drizzle's wrapper around a lost connection",
      new DrizzleQueryError("select 1", [], withCode("CONNECTION_ENDED") as Error),
    ],
  ])("retries %s without a budget (transient)", (_what, error) => {
    expect(classifyFailure(error)).toBe("transient");
  });

  it.each([
    [
      "a TypeError from a bad deploy",
      new TypeError("Cannot read properties of undefined (reading 'amount')"),
    ],
    ["a constraint violation from a migration mistake", withCode("23505")],
    ["a check violation", withCode("23514")],
    ["an undefined column", withCode("42703")],
    [
      "drizzle's wrapper around a unique violation",
      new DrizzleQueryError("insert", [], withCode("23505") as Error),
    ],
    ["something that is not an error", "boom"],
  ])("retries %s up to the budget, then dead-letters it (unexpected)", (_what, error) => {
    expect(classifyFailure(error)).toBe("unexpected");
  });
});

describe("describeError", () => {
  it("names the error and its causes", () => {
    const error = new Error("apply failed", { cause: new RangeError("amount too big") });
    expect(describeError(error)).toBe("Error: apply failed <- RangeError: amount too big");
    expect(describeError("text")).toBe("text");
  });
});
