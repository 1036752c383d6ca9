import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "./logger.ts";

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
});
