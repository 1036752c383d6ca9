import { randomUUID } from "node:crypto";
import type { User } from "@saga/contracts";
import { users } from "@saga/db/user";
import { type FaultProxy, proxiedUrl } from "@saga/tools/fault-proxy";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, expect, it, onTestFinished } from "vitest";
import type { UserService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

// The user-service reaches its database through a fault proxy; the test reads the database directly.
const databaseUrl = useFreshDatabase("user_lost_answer");
let proxy: FaultProxy;
let service: UserService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  const link = await proxiedUrl(databaseUrl(), "user-service→postgres");
  proxy = link.proxy;
  service = await startInProcess(testEnv(link.url, await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  proxy?.heal();
  await service?.stop();
  await proxy?.close();
  await db?.close();
});

const post = (body: unknown, key: string) =>
  service.app.request("/users", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify(body),
  });

it("answers a POST /users whose COMMIT's answer was lost as may have been applied, and its retry with the same key replays the user", async () => {
  onTestFinished(() => proxy.heal());
  const key = randomUUID();
  const body = { username: `user-${randomUUID().slice(0, 8)}`, initialBalance: 100 };
  // Every answer of PostgreSQL takes half a second to come back: the transaction commits, and the COMMIT's
  // answer is on its way when the link is reset.
  proxy.inject({ kind: "latency", ms: 500 });
  const answer = post(body, key);
  const created = () => db.db.select().from(users).where(eq(users.username, body.username));
  while ((await created()).length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  proxy.inject({ kind: "reset" });
  const res = await answer;

  expect(res.status, "a write whose outcome is unknown is not a 503, which says nothing changed").toBe(502);
  expect(((await res.json()) as { error: string }).error).toBe(
    "the database connection was lost before it answered: the request may have been applied (send it again with the same Idempotency-Key)",
  );
  const [row] = await created();

  proxy.heal();
  const retry = await post(body, key);
  expect(retry.status).toBe(201);
  expect(((await retry.json()) as User).id, "the user created the first time").toBe(row?.id);
  expect(await created()).toHaveLength(1);
});
