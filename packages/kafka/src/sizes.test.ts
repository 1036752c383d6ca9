import { describe, expect, it } from "vitest";
import type { OutgoingMessage } from "./port.ts";
import { MAX_MESSAGE_BYTES, messageBytes, sendRuns } from "./sizes.ts";

const message = (value: string, headers: Record<string, string> = {}): OutgoingMessage => ({
  topic: "events",
  key: "order-1",
  value,
  headers,
});

describe("messageBytes", () => {
  it("counts the UTF-8 bytes of the key, the value and the headers, with the record's framing", () => {
    const plain = messageBytes(message("abc"));
    expect(messageBytes(message("abc", { "event-id": "é" }))).toBe(plain + 10 + 8 + 2);
    expect(messageBytes(message("€"))).toBe(messageBytes(message("abc")));
  });
});

describe("sendRuns", () => {
  it("keeps a send of small messages whole", () => {
    const messages = Array.from({ length: 500 }, (_, i) => message(`{"seq":${i}}`, { "event-id": `e${i}` }));
    expect(sendRuns(messages)).toEqual([messages]);
  });

  it("cuts larger ones into runs of at most the bound, in order, a message over it alone", () => {
    const big = (c: string) => message(c.repeat(400_000));
    const messages = [
      big("a"),
      big("b"),
      big("c"),
      message("x"),
      message("y".repeat(MAX_MESSAGE_BYTES)),
      big("d"),
    ];
    const runs = sendRuns(messages);
    expect(runs.flat()).toEqual(messages);
    expect(runs.map((r) => r.length)).toEqual([2, 2, 1, 1]);
    for (const run of runs.filter((r) => r.length > 1))
      expect(run.reduce((n, m) => n + messageBytes(m), 0)).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
  });

  it("measures multi-byte text by its bytes, not its length", () => {
    // 300,000 characters of 3 bytes: 900 KB each, so two do not share a run.
    const runs = sendRuns([message("€".repeat(300_000)), message("€".repeat(300_000))]);
    expect(runs).toHaveLength(2);
  });
});
