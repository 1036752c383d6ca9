import { writeFile } from "node:fs/promises";
import { generateSchemaTypes, SCHEMA_FILE } from "./generate.ts";

// `npm run generate -w @saga/api-client`: writes src/schema.d.ts from the OpenAPI document.
generateSchemaTypes()
  .then((types) => writeFile(SCHEMA_FILE, types))
  .then(() => console.log(`wrote ${SCHEMA_FILE.pathname}`))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
