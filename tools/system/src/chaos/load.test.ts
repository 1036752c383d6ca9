import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { startLoad } from "./load.ts";

/** A stand-in for the gateway that records the orders it is sent, answering each after `delayMs()`. */
async function fakeGateway(delayMs: () => number) {
  const orders: string[] = [];
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
        res.end(req.method === "POST" ? JSON.stringify({ id, status: "PENDING" }) : undefined);
      }, delayMs());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, orders };
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
});
