import { readFile } from "node:fs/promises";
import { createOpenApiDocument } from "@saga/contracts/openapi";
import { expect, it } from "vitest";

it("docs/openapi.json is the document the gateway serves (regenerate: npm run openapi -w docs)", async () => {
  const committed = JSON.parse(await readFile(new URL("../openapi.json", import.meta.url), "utf8"));
  expect(committed).toEqual(JSON.parse(JSON.stringify(createOpenApiDocument())));
});
