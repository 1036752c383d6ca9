import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    globalSetup: ["@saga/tools/test/global-setup"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // request-retry.test.ts measures the heap after a full collection.
    execArgv: ["--expose-gc"],
  },
});
