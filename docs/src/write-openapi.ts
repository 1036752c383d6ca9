import { writeFile } from "node:fs/promises";
import { createOpenApiDocument } from "@saga/contracts/openapi";

// `npm run openapi -w docs`: writes docs/openapi.json, the document the gateway serves at /openapi.json,
// for readers and client generators without a running system. openapi-file.test.ts keeps it current.
const path = new URL("../openapi.json", import.meta.url);
await writeFile(path, `${JSON.stringify(createOpenApiDocument(), null, 2)}\n`);
console.log(`wrote ${path.pathname}`);
