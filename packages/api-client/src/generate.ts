import { createOpenApiDocument } from "@saga/contracts/openapi";
// openapi-typescript builds the types with TypeScript's JavaScript API (its peer is typescript ^5), which
// TypeScript 7 does not have: this package keeps typescript 5.9, installed beside it in its node_modules.
import openapiTS, { astToString } from "openapi-typescript";

/** Where the generated types are committed. */
export const SCHEMA_FILE = new URL("./schema.d.ts", import.meta.url);

/**
 * The TypeScript types of the gateway's OpenAPI document (the one it serves at /openapi.json), as
 * openapi-typescript writes them: `paths`, `components` and `operations`, for openapi-fetch.
 */
export async function generateSchemaTypes(): Promise<string> {
  // A JSON round trip: the generator reads a plain document, not the builder's objects.
  const document = JSON.parse(JSON.stringify(createOpenApiDocument()));
  const ast = await openapiTS(document);
  return (
    "// Generated from the gateway's OpenAPI document by `npm run generate -w @saga/api-client`\n" +
    "// (packages/api-client/src/generate.ts): do not edit by hand.\n\n" +
    astToString(ast)
  );
}
