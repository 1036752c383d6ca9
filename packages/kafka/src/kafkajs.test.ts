import { type LogEntry, logLevel } from "kafkajs";
import { describe, expect, it } from "vitest";
import { kafkajsLogLines } from "./kafkajs.ts";
import type { KafkaLogger } from "./port.ts";

function capturingLogger() {
  const lines: { level: string; fields: object; message: string }[] = [];
  const at = (level: string) => (fields: object, message: string) => lines.push({ level, fields, message });
  const logger: KafkaLogger = { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") };
  return { lines, logger };
}

/** An entry as kafkajs's consumer writes it when it restarts after a crash (consumer/index.js). */
function restarting(retryTime: number, retryCount: number): LogEntry {
  return {
    namespace: "Consumer",
    level: logLevel.ERROR,
    label: "ERROR",
    log: {
      timestamp: new Date().toISOString(),
      logger: "kafkajs",
      message: `Restarting the consumer in ${retryTime}ms`,
      retryCount,
      retryTime,
      groupId: "orders",
    },
  };
}

describe("kafkajs's log lines", () => {
  it("write a consumer's restarts with one message, whatever their jittered delay, the delay in a field", () => {
    const { lines, logger } = capturingLogger();
    const log = kafkajsLogLines(logger);
    log(restarting(1234, 0));
    log(restarting(2871, 1));
    // The process's logger aggregates repeated errors by their message: these two are one kind of line.
    expect(lines).toEqual([
      {
        level: "error",
        message: "kafka: Restarting the consumer",
        fields: expect.objectContaining({ retryTime: 1234, retryCount: 0, groupId: "orders" }),
      },
      {
        level: "error",
        message: "kafka: Restarting the consumer",
        fields: expect.objectContaining({ retryTime: 2871, retryCount: 1, groupId: "orders" }),
      },
    ]);
  });
});
