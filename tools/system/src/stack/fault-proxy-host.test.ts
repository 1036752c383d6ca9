import { once } from "node:events";
import { createConnection, createServer } from "node:net";
import { afterEach, expect, it } from "vitest";
import { type FaultProxyHost, startFaultProxyHost } from "./fault-proxy-host.ts";

const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it("runs proxies in a process of its own and drives their faults from this one", async () => {
  const received: string[] = [];
  const server = createServer((socket) => socket.on("data", (chunk) => received.push(chunk.toString())));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanup.push(() => new Promise((r) => server.close(r)));
  const host: FaultProxyHost = await startFaultProxyHost();
  cleanup.push(() => host.close());

  const proxy = await host.add({ name: "a→b", targetPort: (server.address() as { port: number }).port });
  const client = createConnection({ host: "127.0.0.1", port: proxy.port });
  cleanup.push(() => client.destroy());
  await once(client, "connect");
  client.write("one;");
  while (received.join("") !== "one;") await new Promise((r) => setTimeout(r, 10));

  await proxy.inject({ kind: "blackhole" });
  client.write("two;");
  await new Promise((r) => setTimeout(r, 300));
  expect(received.join("")).toBe("one;");
  await proxy.heal();
  while (received.join("") !== "one;two;") await new Promise((r) => setTimeout(r, 10));
  expect(await proxy.stats()).toMatchObject({ connections: 1, open: 1, bytes: 8 });

  await expect(host.add({ name: "taken", targetPort: 1, port: proxy.port })).rejects.toThrow(/EADDRINUSE/);
  await host.close();
  await expect(proxy.stats()).rejects.toThrow();
});
