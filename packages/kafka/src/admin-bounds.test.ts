import { createServer, type Socket } from "node:net";
import { describe, expect, it, onTestFinished } from "vitest";
import { createKafka, KAFKA_CLIENTS } from "./index.ts";

/** A "broker" that accepts connections and never answers, as one behind a lost network does. */
async function silentBroker() {
  const open = new Set<Socket>();
  const server = createServer((socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  onTestFinished(async () => {
    for (const s of open) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { broker: `127.0.0.1:${port}`, open };
}

describe.each(KAFKA_CLIENTS)("admin probes (%s)", (client) => {
  it("fail while the broker does not answer, and do not pile up", async () => {
    const { broker, open } = await silentBroker();
    const kafka = createKafka({ brokers: [broker], clientId: "probe-test", client, adminTimeout: 300 });
    onTestFinished(() => kafka.close(AbortSignal.timeout(1000)));

    for (let i = 0; i < 10; i++) {
      await expect(kafka.ping()).rejects.toThrow();
      await expect(kafka.consumerLag("g", ["t"])).rejects.toThrow();
    }
    // Twenty failed probes left no pile of connections and requests behind them. Not so with
    // @platformatic/kafka 2.12.1: a connection to a broker that never answers its handshake is not
    // closed when the request times out, nor when the client closes (14 sockets after 20 probes, one
    // request each); its number of requests in flight is bounded all the same, by sharing a probe.
    if (client === "kafkajs") await expect.poll(() => open.size, { timeout: 5000 }).toBeLessThanOrEqual(2);

    // A caller's own signal cuts a probe short too.
    const caller = new AbortController();
    const probing = kafka.ping(caller.signal);
    caller.abort(new Error("shutting down"));
    await expect(probing).rejects.toThrow("shutting down");
  });
});
