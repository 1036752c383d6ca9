import { defineConfig } from "vitest/config";

// Reads files and asks git which belong to the repository: no database, no broker.
export default defineConfig({ test: { include: ["src/**/*.test.ts"] } });
