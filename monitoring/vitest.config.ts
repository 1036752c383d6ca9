import { defineConfig } from "vitest/config";

// Structure tests of monitoring/, compose.yaml and the Dockerfile, and the dashboards' queries against
// a real Prometheus (Debian's package, from `npm run setup`) scraping a real gateway.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
