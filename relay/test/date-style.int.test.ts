import { HEADERS } from "@saga/contracts";
import { setForeignDateStyle } from "@saga/tools/test/harness";
import { describe, expect, it } from "vitest";
import {
  allPublished,
  expectEveryRowInOrder,
  freshOutbox,
  freshTopicPrefix,
  readAll,
  relayEnv,
  row,
  startRelayInProcess,
  writeRows,
} from "./support.ts";

describe("relay on a database whose DateStyle is 'SQL, DMY' and TimeZone Europe/Berlin", () => {
  it("publishes rows read from the table with the occurred-at they were stored with", async () => {
    const { url, sql } = await freshOutbox();
    await setForeignDateStyle(url);
    const prefix = await freshTopicPrefix();
    const a = crypto.randomUUID();
    const written = await writeRows(sql, [row(a, 1), row(a, 2)]);
    // 5 December, and 6 December 23:30 in UTC, which is already the 7th in Berlin.
    const createdAt = ["2026-12-05T10:00:00.123Z", "2026-12-06T23:30:00.456Z"];
    for (const [i, r] of written.entries()) {
      await sql`update outbox set created_at = ${createdAt[i] ?? ""}::timestamptz where id = ${r.id}`;
    }
    const stored = await sql<{ id: string; at: string }[]>`
      select id::text as id, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as at
      from outbox order by position`;
    expect(stored.map((r) => r.at)).toEqual(createdAt);

    // The table mode reads every row from the table.
    startRelayInProcess(relayEnv(url, prefix, { RELAY_MODE: "table" }));
    await allPublished(sql);

    const messages = await readAll(prefix);
    expect(expectEveryRowInOrder(written, messages, prefix)).toBe(0);
    expect(
      messages.map((m) => ({ id: m.headers[HEADERS.eventId], occurredAt: m.headers[HEADERS.occurredAt] })),
    ).toEqual(stored.map((r) => ({ id: r.id, occurredAt: r.at })));
  });
});
