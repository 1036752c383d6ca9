import { writeFile } from "node:fs/promises";
import { asyncApiYaml } from "./asyncapi.ts";

// `npm run asyncapi -w docs`: writes docs/asyncapi.yaml from contracts/.
const file = new URL("../asyncapi.yaml", import.meta.url);
writeFile(file, asyncApiYaml())
  .then(() => console.log(`wrote ${file.pathname}`))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
