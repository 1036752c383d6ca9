// Scratch: CPU of the order read, drizzle select vs the named prepared statement, and POST old vs new.
import { randomUUID } from "node:crypto";
import { createPgDatabase, createDatabase as _unused, orderSchema } from "@saga/db";
import { orders } from "@saga/db/order";
import { migrateDatabase } from "@saga/db";
import { idempotent, requestFingerprint, appendOutbox } from "@saga/messaging";
import { TOPICS } from "@saga/contracts";
import { eq } from "drizzle-orm";
import pg from "pg";
import { placeOrder, readOrder } from "../src/domain/order-hot-path.ts";

const admin = new pg.Client({ connectionString: process.env.POSTGRES_URL });
await admin.connect();
const name = `getbench_${Date.now()}`;
await admin.query(`create database ${name}`);
await admin.end();
const url = new URL(`/${name}`, process.env.POSTGRES_URL).toString();
await migrateDatabase(url, "order");
const db = createPgDatabase(url, orderSchema, { max: 4 });
const N = Number(process.env.N ?? 3000);

async function cpu(label: string, fn: (i: number) => Promise<unknown>) {
  for (let i = 0; i < 300; i++) await fn(i); // warm
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fn(i);
  const c = process.cpuUsage(c0);
  const ms = performance.now() - t0;
  console.log(`${label}: ${(((c.user + c.system) / 1000) / N * 1000).toFixed(1)} µs CPU (node) per call, ${(ms / N * 1000).toFixed(0)} µs wall`);
}
const ids: string[] = [];
for (let i = 0; i < 100; i++) {
  const r = await placeOrder(db.pool, { userId: randomUUID(), amount: 5 }, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  if (r.outcome === "fresh") ids.push(r.order.id);
}
for (let round = 0; round < 2; round++) {
  await cpu("GET drizzle select", (i) => db.db.select().from(orders).where(eq(orders.id, ids[i % 100]!)));
  await cpu("GET named statement", (i) => readOrder(db.pool, ids[i % 100]!));
  await cpu("POST old (idempotent tx, drizzle, 5 statements)", async () => {
    const body = { userId: randomUUID(), amount: 5 };
    await idempotent(db, randomUUID(), requestFingerprint("POST /orders", body), async (tx) => {
      const [row] = await tx.insert(orders).values({ ...body, status: "PENDING" }).returning();
      await appendOutbox(tx, { topic: TOPICS.orderCreated, aggregateId: row!.id, payload: { orderId: row!.id, ...body } });
      return { status: 201, body: row };
    });
  });
  await cpu("POST new (one statement)", async () => {
    const body = { userId: randomUUID(), amount: 5 };
    await placeOrder(db.pool, body, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", { key: randomUUID(), fingerprint: requestFingerprint("POST /orders", body) });
  });
}
await db.close();
