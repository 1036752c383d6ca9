import { type TracingChannelSubscribers, tracingChannel } from "node:diagnostics_channel";
import { createServer, type Socket } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { createKafka, KAFKA_CLIENTS } from "./index.ts";

/** A "broker" that accepts connections and never answers, as one whose process hangs does. */
async function silentBroker() {
  const open = new Set<Socket>();
  const server = createServer((socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.on("error", () => {});
    // What it is sent is read and dropped: a socket left unread never sees the client's FIN, and counted
    // the connections @platformatic/kafka closes as open (14 after 20 probes).
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  onTestFinished(async () => {
    for (const s of open) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { broker: `127.0.0.1:${port}`, open };
}

/**
 * The most @platformatic/kafka admin calls of each operation in flight at once in this process, from the
 * library's diagnostics channels (https://github.com/platformatic/kafka/blob/main/docs/diagnostic.md): a
 * call starts, and ends when its callback is called.
 */
function mostPlatformaticCallsInFlight(): Map<string, number> {
  const inFlight = new Map<string, number>();
  const most = new Map<string, number>();
  type Context = { operation: string };
  const ignore = () => {};
  const handlers: TracingChannelSubscribers<Context> = {
    start({ operation }) {
      const n = (inFlight.get(operation) ?? 0) + 1;
      inFlight.set(operation, n);
      most.set(operation, Math.max(most.get(operation) ?? 0, n));
    },
    asyncStart({ operation }) {
      inFlight.set(operation, (inFlight.get(operation) ?? 0) - 1);
    },
    end: ignore,
    asyncEnd: ignore,
    error: ignore,
  };
  const channels = ["base:metadata", "admin:consumerGroupOffsets"].map((name) =>
    tracingChannel<string, Context>(`plt:kafka:${name}`),
  );
  for (const channel of channels) channel.subscribe(handlers);
  onTestFinished(() => {
    for (const channel of channels) channel.unsubscribe(handlers);
  });
  return most;
}

describe.each(KAFKA_CLIENTS)("admin probes (%s)", (client) => {
  it("fail while the broker does not answer, and do not pile up", async () => {
    const { broker, open } = await silentBroker();
    const calls = mostPlatformaticCallsInFlight();
    const kafka = createKafka({ brokers: [broker], clientId: "probe-test", client, adminTimeout: 300 });
    onTestFinished(() => kafka.close(AbortSignal.timeout(1000)));

    // A readiness probe and a lag monitor, each asking again as soon as its last probe failed; then a
    // burst of both at once.
    for (let i = 0; i < 10; i++) {
      await expect(kafka.ping()).rejects.toThrow();
      await expect(kafka.consumerLag("g", ["t"])).rejects.toThrow();
    }
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        expect(i % 2 ? kafka.ping() : kafka.consumerLag("g", ["t"])).rejects.toThrow(),
      ),
    );

    // The failed probes left no pile of connections behind them.
    await expect.poll(() => open.size, { timeout: 5000 }).toBeLessThanOrEqual(2);
    // Nor of requests: a probe outlives its caller's timeout in the library (a request timeout and a
    // retry), and the next caller shares it instead of starting another. A ping is one metadata call, a
    // lag probe a listConsumerGroupOffsets and a metadata call: one of each probe in flight is two and one
    // (without the sharing, 13 metadata calls were in flight at once). None seen fails too.
    if (client === "platformatic") {
      expect(calls.get("metadata")).toBeLessThanOrEqual(2);
      expect(calls.get("listConsumerGroupOffsets")).toBeLessThanOrEqual(1);
    }

    // A caller's own signal cuts a probe short too.
    const caller = new AbortController();
    const probing = kafka.ping(caller.signal);
    caller.abort(new Error("shutting down"));
    await expect(probing).rejects.toThrow("shutting down");
  });
});
