import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";
import { ALL_TOPICS, EVENT_TOPICS, EVENT_TYPES } from "@saga/contracts";
import { describe, expect, it } from "vitest";
import { asyncApiYaml } from "./asyncapi.ts";

const committed = () => readFile(new URL("../asyncapi.yaml", import.meta.url), "utf8");

describe("docs/asyncapi.yaml", () => {
  it("is what contracts/ generate now (after a contract change: npm run asyncapi -w docs)", async () => {
    expect(await committed()).toBe(asyncApiYaml());
  });

  it("is a valid AsyncAPI 3 document with every topic, its message, key and envelope", async () => {
    const { document, diagnostics } = await new Parser().parse(await committed());
    // Severity 0 is an error, 1 a warning; only hints (2, 3) may remain.
    expect(diagnostics.filter((d) => d.severity <= 1)).toEqual([]);
    if (!document) throw new Error("the parser returned no document");
    expect(document.version()).toBe("3.1.0");
    expect(
      document
        .channels()
        .all()
        .map((c) => c.address())
        .sort(),
    ).toEqual([...ALL_TOPICS].sort());

    for (const topic of EVENT_TOPICS) {
      const channel = document
        .channels()
        .all()
        .find((c) => c.address() === topic);
      const [message] = channel?.messages().all() ?? [];
      expect(message?.name()).toBe(EVENT_TYPES[topic]);
      expect(message?.payload()?.required()).toEqual(expect.arrayContaining(["orderId", "userId", "amount"]));
      const headers = message
        ?.headers()
        ?.allOf()
        ?.flatMap((s) => Object.keys(s.properties() ?? {}));
      expect(headers).toEqual(
        expect.arrayContaining(["event-id", "event-type", "occurred-at", "traceparent"]),
      );
      expect(message?.bindings().get("kafka")?.value().key).toMatchObject({ format: "uuid" });
      const actions = document
        .operations()
        .all()
        .filter((o) => o.channels().all()[0]?.address() === topic);
      expect(actions.map((o) => o.action()).sort()).toEqual(["receive", "send"]);
    }
    // The parser loads its rule sets first: seconds on a busy machine.
  }, 60_000);
});
