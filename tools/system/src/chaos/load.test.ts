import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { startLoad } from "./load.ts";

/**
 * A stand-in for the gateway that records the orders it is sent, answering each after `delayMs()`: a 201
 * naming a new id (recorded by the request's Idempotency-Key), and a 204 to every DELETE (recorded by id).
 */
async function fakeGateway(delayMs: () => number) {
  const orders: string[] = [];
  const answered = new Map<string, string>();
  const deleted = new Set<string>();
  let next = 0;
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => {
      body += chunk;
    });
    req.on("end", () => {
      if (req.method === "POST") orders.push(body);
      setTimeout(() => {
        res.writeHead(req.method === "POST" ? 201 : 204, { "content-type": "application/json" });
        const id = `00000000-0000-4000-8000-${String(next++).padStart(12, "0")}`;
        if (req.method === "POST") answered.set(String(req.headers["idempotency-key"]), id);
        else deleted.add(req.url?.split("/").pop() ?? "");
        res.end(req.method === "POST" ? JSON.stringify({ id, status: "PENDING" }) : undefined);
      }, delayMs());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, orders, answered, deleted };
}

const users = Array.from({ length: 5 }, (_, i) => ({
  id: `00000000-0000-4000-8000-00000000000${i}`,
  balance: 1000,
  token: `token-${i}`,
}));

describe("the chaos load", () => {
  it("sends the same orders for a seed, however fast or slowly they are answered", async () => {
    const sent = async (delayMs: () => number) => {
      const gateway = await fakeGateway(delayMs);
      const load = startLoad({ gatewayUrl: gateway.url, seed: 42, rate: 200, users, cancelRatio: 0.5 });
      await new Promise((r) => setTimeout(r, 400));
      await load.stop();
      return gateway.orders;
    };
    const fast = await sent(() => 0);
    const slow = await sent(() => Math.random() * 30);
    // As sent, but for neighbours that overtook each other on their connections: the shorter run's orders
    // are all among the longer run's.
    const [shorter, longer] = fast.length <= slow.length ? [fast, slow] : [slow, fast];
    expect(shorter.length).toBeGreaterThan(20);
    const left = new Map<string, number>();
    for (const o of longer) left.set(o, (left.get(o) ?? 0) + 1);
    const missing = shorter.filter((o) => {
      const n = left.get(o) ?? 0;
      left.set(o, n - 1);
      return n === 0;
    });
    expect(missing).toEqual([]);
  });

  it("records what it was told: the order each 201 named by its Idempotency-Key, and each order whose DELETE got 204", async () => {
    const gateway = await fakeGateway(() => 0);
    const load = startLoad({ gatewayUrl: gateway.url, seed: 7, rate: 200, users, cancelRatio: 0.5 });
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    const { keysSent, created, canceled } = load.answers;
    expect(created.size).toBeGreaterThan(20);
    expect(keysSent.size).toBe(load.stats.ordersSent);
    expect(new Map([...created].map(([key, order]) => [key, order.id]))).toEqual(gateway.answered);
    for (const key of created.keys()) expect(keysSent.has(key)).toBe(true);
    // With the user and amount each POST sent, every one of them answered here.
    const asText = (os: { userId: string; amount: number }[]) =>
      os.map(({ userId, amount }) => JSON.stringify({ userId, amount })).sort();
    expect(asText([...created.values()])).toEqual(asText(gateway.orders.map((o) => JSON.parse(o))));
    expect(canceled.size).toBeGreaterThan(0);
    expect(canceled).toEqual(gateway.deleted);
  });

  it("sends nothing more once it stops offering, though it was not stopped", async () => {
    const gateway = await fakeGateway(() => 0);
    const load = startLoad({ gatewayUrl: gateway.url, seed: 7, rate: 200, users });
    await new Promise((r) => setTimeout(r, 100));
    load.stopOffering();
    const sent = load.stats.ordersSent;
    await new Promise((r) => setTimeout(r, 100));
    expect(load.stats.ordersSent).toBe(sent);
    await load.stop();
  });
});
