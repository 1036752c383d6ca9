import { freshDatabase, setForeignDateStyle } from "@saga/tools/test/harness";
import { describe, expect, it, onTestFinished } from "vitest";
import { createDatabase } from "./client.ts";
import { createPgDatabase } from "./pg-client.ts";
import { sessionOptions } from "./session.ts";

// 6 December 23:30 in UTC, already the 7th in Berlin.
const STORED = "2026-12-06 23:30:00.456+00";
const READ = "2026-12-06T23:30:00.456Z";

describe("the sessions of our pools on a database whose DateStyle is 'SQL, DMY' and TimeZone Europe/Berlin", () => {
  it("read a timestamptz as stored, through node-postgres and postgres.js", async () => {
    const url = await freshDatabase("db_dates");
    await setForeignDateStyle(url);

    const pg = createPgDatabase(url, {}, { max: 1 });
    onTestFinished(() => pg.close());
    const { rows } = await pg.pool.query<{ at: Date; style: string; zone: string }>(
      "select $1::timestamptz as at, current_setting('DateStyle') as style, current_setting('TimeZone') as zone",
      [STORED],
    );
    expect(rows[0]?.at.toISOString()).toBe(READ);
    // The order of day and month, the setting's second part, is read only from ambiguous input: not ours.
    expect(rows[0]).toMatchObject({ style: expect.stringMatching(/^ISO,/), zone: "UTC" });

    const js = createDatabase(url, {}, { max: 1 });
    onTestFinished(() => js.close());
    // drizzle has the driver give a timestamp as its text, which it reads with `new Date` itself.
    const [row] = await js.sql<{ at: string }[]>`select ${STORED}::timestamptz as at`;
    expect(new Date(row?.at ?? "").toISOString()).toBe(READ);
  });

  it("escape a space in a setting of node-postgres's options string, which the server splits at spaces", () => {
    expect(sessionOptions({ search_path: "a b" })).toBe(
      "-c search_path=a\\ b -c DateStyle=ISO -c TimeZone=UTC",
    );
  });
});
