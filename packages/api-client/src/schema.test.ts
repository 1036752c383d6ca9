import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { generateSchemaTypes, SCHEMA_FILE } from "./generate.ts";

describe("src/schema.d.ts", () => {
  it("is what the OpenAPI document generates now (after an API change: npm run generate -w @saga/api-client)", async () => {
    expect(await readFile(SCHEMA_FILE, "utf8")).toBe(await generateSchemaTypes());
  });
});
