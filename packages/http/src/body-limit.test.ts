import type { IncomingMessage, Server } from "node:http";
import { connect } from "node:net";
import { createLogger, createMetrics } from "@saga/observability";
import { afterEach, describe, expect, it } from "vitest";
import { createBaseApp } from "./app.ts";
import { requestBody } from "./body-limit.ts";
import { listen } from "./serve.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A base app on a real port (1 KiB body limit) that answers each body as it read it. */
async function start() {
  const app = createBaseApp({
    logger: createLogger("test", "silent"),
    metrics: createMetrics("test", "t1"),
    ready: async () => {},
    maxBodyBytes: 1024,
  });
  app.post("/echo", async (c) => c.text(Buffer.from(await requestBody(c)).toString()));
  // Whether the request stream has ended once the body is read: one that has not is drained by the
  // adapter after its answer, on timers that wake an idle process twice a POST.
  app.post("/ended", async (c) => {
    const { incoming } = c.env as unknown as { incoming: IncomingMessage };
    return c.text(`${(await requestBody(c)).length} ${incoming.readableEnded ? "ended" : "open"}`);
  });
  const server = await new Promise<Server>((resolve) => {
    const s: Server = listen({ app, port: 0 }, () => resolve(s));
  });
  cleanups.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

/** Sends `parts` on one connection, `gapMs` apart, and gives the bodies of the first `answers` answers. */
function send(port: number, parts: string[], answers: number, gapMs = 100): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    cleanups.push(() => socket.destroy());
    let received = "";
    socket.on("error", reject);
    socket.on("data", (d) => {
      received += d.toString();
      const bodies: string[] = [];
      for (let rest = received; bodies.length < answers; ) {
        const end = rest.indexOf("\r\n\r\n");
        const length = Number(/\r\ncontent-length: (\d+)/i.exec(rest.slice(0, end))?.[1]);
        if (end === -1 || rest.length < end + 4 + length) return;
        bodies.push(rest.slice(end + 4, end + 4 + length));
        rest = rest.slice(end + 4 + length);
      }
      resolve(bodies);
    });
    parts.forEach((part, i) => setTimeout(() => socket.write(part), i * gapMs));
  });
}

const post = (body: string, declared = body.length, path = "/echo") =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${declared}\r\n\r\n${body}`;

describe("bodyLimit reads a body whole, however it comes", () => {
  it("in the same packet as its head", async () => {
    const port = await start();
    expect(await send(port, [post(`{"amount":5,"userId":"${"a".repeat(180)}"}`)], 1)).toEqual([
      `{"amount":5,"userId":"${"a".repeat(180)}"}`,
    ]);
  });

  it("partly with its head, the rest a moment later", async () => {
    const port = await start();
    expect(await send(port, [post("first half,", 23), " second half"], 1)).toEqual([
      "first half, second half",
    ]);
  });

  it("several requests in one packet (pipelined), each its own", async () => {
    const port = await start();
    expect(await send(port, [post("one") + post("") + post("three")], 3)).toEqual(["one", "", "three"]);
  });

  it("and the request has ended by the time the app has it, however it came", async () => {
    const port = await start();
    const ended = (body: string, declared = body.length) => post(body, declared, "/ended");
    expect(await send(port, [ended("whole")], 1)).toEqual(["5 ended"]);
    expect(await send(port, [ended("first half,", 23), " second half"], 1)).toEqual(["23 ended"]);
    expect(await send(port, [ended("one") + ended("") + ended("three")], 3)).toEqual([
      "3 ended",
      "0 ended",
      "5 ended",
    ]);
  });
});

describe("a transfer coding other than chunked", () => {
  /** Sends raw bytes on a connection of their own: what came back, and whether the server closed it. */
  const exchange = (port: number, bytes: string) =>
    new Promise<{ received: string; closed: boolean }>((resolve) => {
      const socket = connect(port, "127.0.0.1", () => socket.write(bytes));
      cleanups.push(() => socket.destroy());
      let received = "";
      socket.on("data", (d) => {
        received += d.toString();
      });
      const keptOpen = setTimeout(() => resolve({ received, closed: false }), 2000);
      socket.once("close", () => {
        clearTimeout(keptOpen);
        resolve({ received, closed: true });
      });
    });

  // RFC 9112 §6.1: Node removes the chunked framing and would hand on the still gzipped bytes as the body.
  it.each([
    ["POST", "gzip, chunked"],
    ["POST", "identity, chunked"],
    ["GET", "gzip, chunked"],
  ])(
    "%s with Transfer-Encoding: %s is answered 501 as JSON, its body never read, and the connection closed",
    async (method, coding) => {
      const port = await start();
      const { received, closed } = await exchange(
        port,
        `${method} /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${coding}\r\n\r\n2\r\nok\r\n0\r\n\r\n`,
      );
      const [head = "", body = ""] = received.split("\r\n\r\n");
      expect(head).toMatch(/^HTTP\/1\.1 501 /);
      expect(head).toMatch(/\r\nconnection: close\r\n/i);
      expect(JSON.parse(body)).toEqual({
        error:
          "a Transfer-Encoding other than chunked is not supported: send the body chunked, or with a Content-Length",
        requestId: /\r\nx-request-id: (\S+)/i.exec(head)?.[1],
      });
    },
  );

  it("chunked alone, in any case, is read as ever", async () => {
    const port = await start();
    const chunked = (coding: string) =>
      `POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${coding}\r\n\r\n2\r\nok\r\n0\r\n\r\n`;
    expect(await send(port, [chunked("chunked") + chunked("Chunked")], 2)).toEqual(["ok", "ok"]);
  });
});
