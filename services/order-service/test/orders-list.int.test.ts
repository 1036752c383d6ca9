import { randomUUID } from "node:crypto";
import type { Order } from "@saga/contracts";
import { useFreshDatabase } from "@saga/tools/test/harness";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeCursor, ordersPage } from "../src/domain/orders.ts";
import type { OrderService } from "../src/service.ts";
import { freshTopicPrefix, openDatabase, startInProcess, testEnv } from "./support.ts";

const databaseUrl = useFreshDatabase("order_list");
let service: OrderService;
let db: ReturnType<typeof openDatabase>;

beforeAll(async () => {
  service = await startInProcess(testEnv(databaseUrl(), await freshTopicPrefix()));
  db = openDatabase(databaseUrl());
});

afterAll(async () => {
  await service?.stop();
  await db?.close();
});

/**
 * `n` orders of `userId`, decided (the saga's sweep leaves them alone), three to an instant and every
 * instant within one millisecond, as orders written in one transaction, or in one millisecond, are: a
 * cursor that kept only the API's milliseconds, or only created_at, would repeat or skip them.
 */
async function seedOrders(userId: string, n: number) {
  await db.pool.query({
    text: `insert into orders (user_id, amount, status, created_at)
           select $1::uuid, g + 1, case when g % 5 = 0 then 'CANCELED' else 'CONFIRMED' end,
                  timestamptz '2025-03-01T10:00:00.000100Z' + (g / 3) * interval '1 microsecond'
           from generate_series(0, $2::int - 1) g`,
    values: [userId, n],
  });
}

/**
 * The user's orders as the API writes them, in the list's order (created_at, then id; `orders.`, as the
 * output column created_at is the text, to the millisecond).
 */
async function storedOrders(userId: string): Promise<Order[]> {
  const { rows } = await db.pool.query<{
    id: string;
    user_id: string;
    amount: string;
    status: string;
    created_at: string;
  }>({
    text: `select id, user_id, amount, status,
                  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as created_at
           from orders where user_id = $1 order by orders.created_at, orders.id`,
    values: [userId],
  });
  return rows.map((r) => ({
    id: r.id,
    userId: r.user_id,
    amount: Number(r.amount),
    status: r.status as Order["status"],
    createdAt: r.created_at,
  }));
}

/** The target of a `Link: <…>; rel="next"`, or undefined without one. */
const nextLink = (res: Response) => /^<([^>]+)>; rel="next"$/.exec(res.headers.get("link") ?? "")?.[1];

/** Every page from `first` on, following each one's Link to the next, as a client would. */
async function allPages(first: string) {
  const pages: Order[][] = [];
  const links: string[] = [];
  for (let path: string | undefined = first; path !== undefined && pages.length < 50; ) {
    const res = await service.app.request(path);
    expect(res.status, path).toBe(200);
    pages.push((await res.json()) as Order[]);
    path = nextLink(res);
    if (path) links.push(path);
  }
  return { pages, links };
}

describe("GET /orders?userId=, a page at a time", () => {
  it("lists 250 orders in pages of 100, 100 and 50 by their Link, oldest first, each once, none of another user's", async () => {
    const user = randomUUID();
    const other = randomUUID();
    await seedOrders(user, 250);
    await seedOrders(other, 40);
    const stored = await storedOrders(user);
    expect(stored).toHaveLength(250);

    const { pages, links } = await allPages(`/orders?userId=${user}`);
    expect(pages.map((p) => p.length)).toEqual([100, 100, 50]);
    // The same orders in the same order as the whole list, none twice, none missed.
    expect(pages.flat()).toEqual(stored);
    expect(new Set(pages.flat().map((o) => o.id)).size).toBe(250);
    expect(pages.flat().every((o) => o.userId === user)).toBe(true);
    // The default limit, said in the link; the cursor is the last order's position.
    expect(links).toHaveLength(2);
    // The last order's position: 2025-03-01T10:00:00.000133Z and its id.
    expect(links[0]).toBe(`/orders?userId=${user}&limit=100&after=1740823200.000133_${stored[99]?.id}`);
    expect(links[1]).toBe(`/orders?userId=${user}&limit=100&after=1740823200.000166_${stored[199]?.id}`);

    // Any limit, and the whole list in one page of the most there may be, with no link.
    const bySeven = await allPages(`/orders?userId=${user}&limit=7`);
    expect(bySeven.pages.map((p) => p.length)).toEqual([...Array(35).fill(7), 5]);
    expect(bySeven.pages.flat()).toEqual(stored);
    const whole = await service.app.request(`/orders?userId=${user}&limit=1000`);
    expect(whole.headers.get("link")).toBeNull();
    expect(await whole.json()).toEqual(stored);
    // A user with none: an empty page, no link.
    const none = await service.app.request(`/orders?userId=${randomUUID()}`);
    expect(await none.json()).toEqual([]);
    expect(none.headers.get("link")).toBeNull();
  });

  it("gives no link on a last page that ends at its limit", async () => {
    const user = randomUUID();
    await seedOrders(user, 200);
    const { pages } = await allPages(`/orders?userId=${user}`);
    expect(pages.map((p) => p.length)).toEqual([100, 100]);
  });

  it("shows an order placed while a client pages through after every one it had yet to see", async () => {
    const user = randomUUID();
    await seedOrders(user, 150);
    const first = await service.app.request(`/orders?userId=${user}`);
    expect(((await first.json()) as Order[]).length).toBe(100);
    const placed = await service.app.request("/orders", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: user, amount: 7 }),
    });
    expect(placed.status).toBe(201);
    const second = await service.app.request(nextLink(first) ?? "");
    const page = (await second.json()) as Order[];
    expect(page.map((o) => o.id)).toEqual((await storedOrders(user)).slice(100).map((o) => o.id));
    expect(page).toHaveLength(51);
    expect(page.at(-1)).toEqual(await placed.json());
    expect(nextLink(second)).toBeUndefined();
  });

  it("names another user's position only as a position: its cursor on this user's list shows this user's orders", async () => {
    const a = randomUUID();
    const b = randomUUID();
    await seedOrders(a, 30);
    await seedOrders(b, 30);
    const aFirst = await service.app.request(`/orders?userId=${a}&limit=10`);
    const after = new URL(nextLink(aFirst) ?? "", "http://x").searchParams.get("after");
    const res = await service.app.request(`/orders?userId=${b}&limit=100&after=${after}`);
    expect(res.status).toBe(200);
    const page = (await res.json()) as Order[];
    expect(page.length).toBeGreaterThan(0);
    expect(page.every((o) => o.userId === b)).toBe(true);
  });

  it.each(["0", "1001", "-1", "abc", "1.5", "", "1e2", "10000000000"])(
    "answers limit=%j with a 400 that names limit",
    async (limit) => {
      const user = randomUUID();
      const res = await service.app.request(`/orders?userId=${user}&limit=${limit}`);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: "limit must be an integer from 1 to 1000" });
    },
  );

  it.each([
    ["empty", ""],
    ["not a cursor", "nope"],
    ["without an id", "1740823200.000133"],
    ["in milliseconds", `1740823200.133_${randomUUID()}`],
    ["before the epoch", `-1.000000_${randomUUID()}`],
    ["past the seconds it allows", `100000000000.000000_${randomUUID()}`],
    ["with an id in capitals", `1740823200.000133_${randomUUID().toUpperCase()}`],
    ["with a bad id", "1740823200.000133_not-a-uuid"],
    ["with more", `1740823200.000133_${randomUUID()}_x`],
  ])("answers an after %s with a 400 that names after", async (_, after) => {
    const res = await service.app.request(
      `/orders?userId=${randomUUID()}&after=${encodeURIComponent(after)}`,
    );
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: expect.stringMatching(/^after must be/) });
  });

  it("takes any position a cursor may hold, an order there or not: before every order, after every one", async () => {
    const user = randomUUID();
    await seedOrders(user, 5);
    const stored = await storedOrders(user);
    const page = async (after: string) => {
      const res = await service.app.request(`/orders?userId=${user}&after=${after}`);
      expect(res.status, after).toBe(200);
      return res.json();
    };
    expect(await page(`0.000000_${"0".repeat(8)}-0000-0000-0000-${"0".repeat(12)}`)).toEqual(stored);
    expect(await page(`99999999999.999999_${"f".repeat(8)}-ffff-ffff-ffff-${"f".repeat(12)}`)).toEqual([]);
    // Between the first instant's orders: after the first of them by id.
    expect(await page(`1740823200.000100_${stored[0]?.id}`)).toEqual(stored.slice(1));
  });

  it("reads a page through orders_user_id_idx: its own rows and the cursor's ties, whatever the user's total", async () => {
    const user = randomUUID();
    await seedOrders(user, 250);
    // Other users' orders enough that the planner's choice is the one it makes on a real table.
    await db.pool.query(
      `insert into orders (user_id, amount, status, created_at)
       select gen_random_uuid(), 100, 'CONFIRMED', now() - interval '1 day' from generate_series(1, 20000)`,
    );
    await db.pool.query("analyze orders");
    const stored = await storedOrders(user);
    // The second page's statement, after the 100th order: a position within a group of three ties.
    const [position] = (
      await db.pool.query<{ t: string }>({
        text: "select extract(epoch from created_at)::numeric(17, 6)::text as t from orders where id = $1",
        values: [stored[99]?.id],
      })
    ).rows;
    const after = decodeCursor(`${position?.t}_${stored[99]?.id}`);
    const statement = ordersPage(db.db, user, { limit: 100, after });
    const [row] = (await db.db.execute(sql`explain (analyze, format json) ${statement}`)).rows as {
      "QUERY PLAN": [{ Plan: PlanNode }];
    }[];
    const nodes = flatten(row?.["QUERY PLAN"][0].Plan);
    const plan = JSON.stringify(row?.["QUERY PLAN"]);
    expect(
      nodes.map((n) => n["Node Type"]),
      plan,
    ).not.toContain("Seq Scan");
    expect(
      nodes.map((n) => n["Node Type"]),
      plan,
    ).not.toContain("Sort");
    const scan = nodes.find((n) => n["Node Type"] === "Index Scan");
    expect(scan?.["Index Name"], plan).toBe("orders_user_id_idx");
    // A page's worth: its 100, the one that says there is a next, the cursor's ties before it (two here)
    // and the row that ends the last group of ties; not the user's 250, nor the table.
    const read = (scan?.["Actual Rows"] ?? 0) + (scan?.["Rows Removed by Filter"] ?? 0);
    expect(read, plan).toBeGreaterThanOrEqual(101);
    expect(read, plan).toBeLessThanOrEqual(101 + 2 + 1);
  });
});

type PlanNode = {
  "Node Type": string;
  "Index Name"?: string;
  "Actual Rows"?: number;
  "Rows Removed by Filter"?: number;
  Plans?: PlanNode[];
};
const flatten = (node: PlanNode | undefined): PlanNode[] =>
  node ? [node, ...(node.Plans ?? []).flatMap(flatten)] : [];
