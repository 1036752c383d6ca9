import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./src/user-schema.ts",
  out: "./migrations/user",
});
