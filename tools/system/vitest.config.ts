import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    globalSetup: ["@saga/tools/test/global-setup"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
  },
});
