import { describe, expect, it } from "vitest";
import { createProbes } from "./probes.ts";

describe("createProbes", () => {
  it("starts no probe for a caller that has already given up", async () => {
    const probe = createProbes(1000);
    let started = 0;
    const request = () => {
      started++;
      return Promise.reject(new Error("broker away"));
    };
    await expect(probe(["ping"], AbortSignal.abort(new Error("shutting down")), request)).rejects.toThrow(
      "shutting down",
    );
    expect(started).toBe(0);
  });

  it("shares a probe in flight between callers", async () => {
    const probe = createProbes(1000);
    let started = 0;
    let answer: (value: string) => void = () => {};
    const request = () => {
      started++;
      return new Promise<string>((resolve) => {
        answer = resolve;
      });
    };
    const first = probe(["lag", "g"], undefined, request);
    const second = probe(["lag", "g"], undefined, request);
    answer("ok");
    expect(await Promise.all([first, second])).toEqual(["ok", "ok"]);
    expect(started).toBe(1);
  });
});
