import { fileURLToPath } from "node:url";

/** The monorepo root. */
export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/** Git-ignored: downloaded jars, throwaway run dirs and the data of `npm start`. */
export const cacheDir = `${repoRoot}.cache`;
