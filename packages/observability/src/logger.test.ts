import { spawn } from "node:child_process";
import { once } from "node:events";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { createLogger, flushRepeats } from "./logger.ts";

function captured() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, destination };
}

describe("createLogger", () => {
  it("writes a repeated error once, then once with its count when the window closes", async () => {
    const { lines, destination } = captured();
    const logger = createLogger("test", "info", { repeatWindowMs: 100, destination }).child({
      instance: "a",
    });
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    for (let i = 0; i < 300; i++) logger.warn({ err: refused, attempt: i }, "database connection lost");
    logger.warn({ err: new Error("another failure") }, "database connection lost");
    for (let i = 0; i < 3; i++) logger.info("order created");
    expect(lines.map((l) => l.msg)).toEqual([
      "database connection lost",
      "database connection lost",
      "order created",
      "order created",
      "order created",
    ]);
    await new Promise((r) => setTimeout(r, 200));
    expect(lines).toHaveLength(6);
    expect(lines[5]).toMatchObject({
      level: 40,
      instance: "a",
      msg: "database connection lost (299 more times in 0.1 s)",
      repeated: 299,
      err: { message: "connect ECONNREFUSED 127.0.0.1:5432" },
    });
    // A new window starts with the next one.
    logger.warn({ err: refused }, "database connection lost");
    expect(lines).toHaveLength(7);
  });

  it("writes one line and one summary for failed queries that differ only in their SQL's params", async () => {
    const { lines, destination } = captured();
    const logger = createLogger("test", "info", { repeatWindowMs: 100, destination });
    // As drizzle wraps a query's failure: the SQL and its params in the message, the driver's error as cause.
    class DrizzleQueryError extends Error {
      constructor(query: string, params: unknown[], cause: Error) {
        super(`Failed query: ${query}\nparams: ${params}`, { cause });
      }
    }
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    for (let i = 0; i < 20; i++) {
      const id = crypto.randomUUID();
      const err = new DrizzleQueryError('select "id", "credit" from "users" where "id" = $1', [id], refused);
      logger.warn({ err, requestId: id, path: `/users/${id}` }, "the database is unavailable; retry later");
    }
    expect(lines).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(lines.map((l) => [l.msg, l.repeated])).toEqual([
      ["the database is unavailable; retry later", undefined],
      ["the database is unavailable; retry later (19 more times in 0.1 s)", 19],
    ]);
  });

  it("writes each line that names another instance, outbox or dead letter", async () => {
    const { lines, destination } = captured();
    const logger = createLogger("test", "info", { repeatWindowMs: 100, destination });
    logger.warn(
      { upstream: "users", target: "127.0.0.1:8081", why: "ECONNREFUSED" },
      "instance out of rotation",
    );
    logger.warn(
      { upstream: "users", target: "127.0.0.1:8082", why: "ECONNREFUSED" },
      "instance out of rotation",
    );
    const refused = new Error("connect ECONNREFUSED 127.0.0.1:5432");
    for (const outbox of ["user", "order"])
      logger.child({ outbox }).warn({ err: refused, stage: "read" }, "could not read the outbox");
    // As the inbox writes a dead letter: a child per message, the error's text in `error`.
    for (const [claimKey, error] of [
      ["a1", "payload.amount: expected number"],
      ["b2", "payload.amount: expected number"],
      ["c3", "schema-version 2"],
    ])
      logger
        .child({ claimKey })
        .warn({ reason: "poison", error }, "event dead-lettered to order.created.dlq");
    logger.child({ claimKey: "d4" }).warn({ reason: "poison", error: "a" }, "event dead-lettered to x.dlq");
    logger.child({ claimKey: "d4" }).warn({ reason: "poison", error: "b" }, "event dead-lettered to x.dlq");
    expect(lines.map((l) => [l.msg, l.target ?? l.outbox ?? l.claimKey])).toEqual([
      ["instance out of rotation", "127.0.0.1:8081"],
      ["instance out of rotation", "127.0.0.1:8082"],
      ["could not read the outbox", "user"],
      ["could not read the outbox", "order"],
      ["event dead-lettered to order.created.dlq", "a1"],
      ["event dead-lettered to order.created.dlq", "b2"],
      ["event dead-lettered to order.created.dlq", "c3"],
      ["event dead-lettered to x.dlq", "d4"],
      ["event dead-lettered to x.dlq", "d4"],
    ]);
  });

  it("says how often a line came in a summary of what made it the same line, not of its first occurrence", async () => {
    const { lines, destination } = captured();
    const logger = createLogger("test", "info", { repeatWindowMs: 100, destination }).child({
      instance: "a",
    });
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
    for (let i = 0; i < 5; i++)
      logger.warn(
        {
          err: refused,
          requestId: `r${i}`,
          path: `/orders/${i}`,
          attempt: i,
          offset: String(i),
          target: "db",
        },
        "database unavailable",
      );
    await new Promise((r) => setTimeout(r, 200));
    expect(lines).toHaveLength(2);
    const [first, summary] = lines;
    expect(first).toMatchObject({ requestId: "r0", path: "/orders/0" });
    expect(summary).toMatchObject({
      instance: "a",
      target: "db",
      repeated: 4,
      err: { code: "ECONNREFUSED" },
      msg: "database unavailable (4 more times in 0.1 s)",
    });
    // r0 did not fail 4 more times: the four were r1 to r4.
    for (const field of ["requestId", "path", "attempt", "offset"]) expect(summary).not.toHaveProperty(field);
  });

  it("writes the counts of every window still open when flushed, as a process does before it exits", () => {
    const { lines, destination } = captured();
    const logger = createLogger("test", "info", { repeatWindowMs: 60_000, destination });
    for (let i = 0; i < 500; i++)
      logger.warn({ err: new Error("connect ECONNREFUSED") }, "database unavailable");
    logger.child({ outbox: "order" }).error("relay loop crashed");
    expect(lines).toHaveLength(2);
    flushRepeats();
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({
      level: 40,
      repeated: 499,
      msg: expect.stringMatching(/^database unavailable \(499 more times in /),
    });
    // The window is closed: the next is written at once, and a second flush writes nothing more.
    logger.warn({ err: new Error("connect ECONNREFUSED") }, "database unavailable");
    flushRepeats();
    expect(lines).toHaveLength(4);
  });
});

describe("a process that exits right after it logged", () => {
  it("has written every line whole, in order, however large, when it is gone", async () => {
    const fixture = fileURLToPath(new URL("../test/fixtures/exit-after-large-line.ts", import.meta.url));
    const child = spawn(process.execPath, [fixture], { stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const [code] = (await once(child, "exit")) as [number | null];
    if (child.stdout.readable) await once(child.stdout, "end");
    expect(code).toBe(1);
    const lines = output.split("\n").filter(Boolean);
    expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual([
      "a large line",
      "the reason it exits",
    ]);
  });
});
