import { randomUUID } from "node:crypto";
import type { User } from "@saga/contracts";
import { setForeignDateStyle, useFreshDatabase } from "@saga/tools/test/harness";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("user_dates");
let service: UserService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  await setForeignDateStyle(databaseUrl());
  service = await startInProcess(testEnv(databaseUrl(), await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  await service?.stop();
  await db?.close();
});

/** A user's created_at as stored, in UTC to the millisecond (the API's form), read as text by the server. */
async function storedCreatedAt(id: string): Promise<string | undefined> {
  const { rows } = await db.pool.query<{ at: string }>(
    `select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as at from users where id = $1`,
    [id],
  );
  return rows[0]?.at;
}

describe("on a database whose DateStyle is 'SQL, DMY' and TimeZone Europe/Berlin", () => {
  it("POST /users answers 201 with the createdAt it stored", async () => {
    const res = await service.app.request("/users", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: `u-${randomUUID()}`, initialBalance: 100 }),
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as User;
    expect(created.createdAt).toBe(await storedCreatedAt(created.id));
  });

  it("GET /users/:id reads a user created on 5 December as created on 5 December", async () => {
    const { rows } = await db.pool.query<{ id: string }>(
      `insert into users (username, initial_balance, balance, created_at)
       values ($1, 100, 100, '2026-12-05 10:00:00.123+00') returning id::text as id`,
      [`u-${randomUUID()}`],
    );
    const id = rows[0]?.id ?? "";
    expect(await storedCreatedAt(id)).toBe("2026-12-05T10:00:00.123Z");

    const res = await service.app.request(`/users/${id}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, createdAt: "2026-12-05T10:00:00.123Z" });
  });
});
