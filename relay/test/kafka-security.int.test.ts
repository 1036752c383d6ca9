import { describe, expect, it } from "vitest";
import { freshOutbox, freshTopicPrefix, relayEnv, startRelayInProcess } from "./support.ts";

// The adapters' tests (packages/kafka/src/security.test.ts) reach a broker that asks for TLS and SASL;
// this one shows that the relay's KAFKA_SSL reaches its Kafka client, on the run's plaintext broker.
describe("a relay told to speak TLS to Kafka", () => {
  it("is not ready on a broker that does not, and says so", async () => {
    const { url } = await freshOutbox();
    const relay = startRelayInProcess(relayEnv(url, await freshTopicPrefix(), { KAFKA_SSL: true }));

    const ready = await relay.app.request("/ready");
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { error: string }).error).toMatch(/TLS/);
  });
});
