import { defineConfig } from "vitest/config";

// The gateway owns no database: its tests start small HTTP servers as upstreams, so no infra is needed.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
