import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The integration files mostly wait (for brokers, takeovers, a 10 s outage): on a 2-CPU machine vitest
    // would run them one at a time; three at once keeps the suite well within its 3-minute budget.
    maxWorkers: 3,
    projects: [
      { test: { name: "unit", include: ["src/**/*.test.ts"] } },
      {
        test: {
          name: "integration",
          include: ["test/**/*.int.test.ts"],
          globalSetup: ["@saga/tools/test/global-setup"],
          testTimeout: 90_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
