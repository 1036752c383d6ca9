import { kafkaBrokers, postgresUrl, uniqueName } from "@saga/tools/test/harness";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePorts, type System, startSystem } from "./system.ts";

// The whole system with two order-service instances behind the gateway (`--order-services 2`), on the
// test run's PostgreSQL and Kafka, driven through the gateway.
let system: System;
let orderDb: postgres.Sql;
let adminToken: string;
const logs: string[] = [];

beforeAll(async () => {
  system = await startSystem({
    ports: await freePorts(2),
    external: {
      postgresUrl: postgresUrl(),
      kafkaBrokers: kafkaBrokers(),
      prefix: `${uniqueName("orders2")}.`,
    },
    env: {
      LOG_LEVEL: "warn",
      RATE_LIMIT_SUBJECT_PER_S: "10000",
      RATE_LIMIT_SUBJECT_BURST: "10000",
      RATE_LIMIT_ADDRESS_PER_S: "10000",
      RATE_LIMIT_ADDRESS_BURST: "10000",
    },
    output: (name, line) => logs.push(`${name} | ${line}`),
    log: (line) => logs.push(line),
  });
  orderDb = postgres(system.orderDbUrl, { max: 1, onnotice: () => {} });
  adminToken = await system.token("test-admin", { admin: true });
}, 180_000);

afterAll(async () => {
  await orderDb?.end();
  await system?.stop();
});

type Answer = { status: number; headers: Headers; body: Record<string, unknown> };

/** A request through the gateway as the admin. */
async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${system.gatewayUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${adminToken}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : {} } as Answer;
}

async function newUser(balance = 100_000): Promise<string> {
  const created = await api("POST", "/users", { username: uniqueName("orders2"), initialBalance: balance });
  expect(created.status).toBe(201);
  return created.body.id as string;
}

async function placeOrder(userId: string, amount = 10): Promise<string> {
  const placed = await api("POST", "/orders", { userId, amount });
  expect(placed.status, JSON.stringify(placed.body)).toBe(201);
  return placed.body.id as string;
}

/** The sum of the series of `name` whose labels include `labels`, on one order-service instance. */
async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (m && Object.entries(labels).every(([k, v]) => (m[1] ?? "").includes(`${k}="${v}"`)))
      sum += Number(m[2]);
  }
  return sum;
}

const acceptedOn = (port: number) =>
  metric(port, "http_requests_total", { method: "POST", route: "/orders", status: "201" });
const confirmedOn = (port: number) => metric(port, "saga_outcomes_total", { outcome: "confirmed" });

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}\n${logs.slice(-20).join("\n")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const statusOf = async (ids: string[]) =>
  (await orderDb`select status from orders where id = any(${ids}::uuid[])`).map((r) => r.status as string);

describe("two order-service instances behind the gateway", () => {
  it("runs the processes as order-1 and order-2, each given to the gateway", () => {
    expect([...system.processes.keys()]).toEqual([
      "user-1",
      "user-2",
      "order-1",
      "order-2",
      "relay-1",
      "relay-2",
      "gateway",
    ]);
    expect(system.ports.orders).toHaveLength(2);
  });

  it("completes the sagas placed through the gateway, whichever instance accepted them", async () => {
    const [one, two] = system.ports.orders as [number, number];
    const before = [await acceptedOn(one), await acceptedOn(two)];
    const userId = await newUser();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await placeOrder(userId));

    // Both instances took orders…
    const accepted = [(await acceptedOn(one)) - (before[0] ?? 0), (await acceptedOn(two)) - (before[1] ?? 0)];
    expect(Math.min(...accepted), `accepted per instance: ${accepted}`).toBeGreaterThan(0);
    expect(accepted.reduce((a, b) => a + b)).toBe(6);
    // …and every saga finished, read back through the gateway, whichever instance answers.
    await eventually("every order CONFIRMED", async () =>
      (await statusOf(ids)).filter((s) => s === "CONFIRMED").length === 6 ? true : undefined,
    );
    for (const id of ids) expect((await api("GET", `/orders/${id}`)).body.status).toBe("CONFIRMED");
    expect((await api("GET", `/users/${userId}`)).body.balance).toBe(100_000 - 6 * 10);
  });

  it("answers a Prefer: wait read held on one instance when the other applies the user-service's answer", async () => {
    const [one, two] = system.ports.orders as [number, number];
    const userId = await newUser();
    // Nothing answers the order until the user-services are back: it is PENDING while the reads are held.
    const users = ["user-1", "user-2"].map((name) => system.processes.get(name));
    await Promise.all(users.map((p) => p?.stop()));
    const id = await placeOrder(userId);

    const held = () => metric(one, "http_admission_in_flight", { lane: "wait" });
    const heldOnTwo = () => metric(two, "http_admission_in_flight", { lane: "wait" });
    // One after the other, round-robin: one read held on each instance.
    const first = api("GET", `/orders/${id}`, undefined, { prefer: "wait=25" });
    await eventually("a read held on one instance", async () =>
      (await held()) + (await heldOnTwo()) === 1 ? true : undefined,
    );
    const second = api("GET", `/orders/${id}`, undefined, { prefer: "wait=25" });
    await eventually("a read held on each instance", async () =>
      (await held()) === 1 && (await heldOnTwo()) === 1 ? true : undefined,
    );
    expect(await statusOf([id])).toEqual(["PENDING"]);
    const confirmedBefore = [await confirmedOn(one), await confirmedOn(two)];

    await Promise.all(users.map((p) => p?.start()));
    for (const answer of await Promise.all([first, second])) {
      expect(answer.status).toBe(200);
      expect(answer.headers.get("preference-applied")).toBe("wait=25");
      expect(answer.body).toMatchObject({ id, status: "CONFIRMED" });
    }
    // One instance's consumer applied the answer; the other's read was answered by its notification.
    const applied = [
      (await confirmedOn(one)) - (confirmedBefore[0] ?? 0),
      (await confirmedOn(two)) - (confirmedBefore[1] ?? 0),
    ];
    expect([...applied].sort()).toEqual([0, 1]);
    expect(await statusOf([id])).toEqual(["CONFIRMED"]);
  });

  it("keeps POST /orders working through the other instance when one is killed", async () => {
    const userId = await newUser();
    const order1 = system.processes.get("order-1");
    await order1?.kill("SIGKILL");
    // Out of rotation once a health check (every second) or a request is refused its connection.
    await eventually("order-1 out of rotation", async () => {
      const text = await (await fetch(`http://127.0.0.1:${system.ports.gatewayMetrics}/metrics`)).text();
      return /gateway_upstream_healthy_instances\{upstream="order-service",[^}]*\} 1\b/.test(text)
        ? true
        : undefined;
    });

    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await placeOrder(userId));
    for (const id of ids) expect((await api("GET", `/orders/${id}`)).status).toBe(200);
    // The survivor's consumer takes every partition once the dead member's session ends, and finishes them.
    await eventually(
      "every order CONFIRMED",
      async () => ((await statusOf(ids)).every((s) => s === "CONFIRMED") ? true : undefined),
      90_000,
    );
    expect((await api("GET", `/users/${userId}`)).body.balance).toBe(100_000 - 4 * 10);
  });
});
