import { createOpenApiDocument } from "@saga/contracts/openapi";
import type { AppEnv } from "@saga/http";
import { Scalar } from "@scalar/hono-api-reference";
import type { Hono } from "hono";

/** The paths of the public document and its reference page: no token, no lane, no rate limit. */
export const DOCS_PATHS: readonly string[] = ["/openapi.json", "/docs"];

/**
 * `GET /openapi.json`: the API's OpenAPI 3.1 document, generated from the route definitions in
 * contracts once, when the app is built; `GET /docs`: Scalar's interactive reference of it, whose
 * script comes from `scriptUrl`.
 */
export function registerDocsRoutes(app: Hono<AppEnv>, { scriptUrl }: { scriptUrl: string }) {
  const document = JSON.stringify(createOpenApiDocument());
  app.get("/openapi.json", (c) =>
    c.body(document, 200, { "content-type": "application/json", "cache-control": "public, max-age=60" }),
  );
  // No fonts from Scalar's servers: the page loads its script and the document, nothing else. The page
  // is the same for every request: rendered by the first, then served as it is.
  const reference = Scalar<AppEnv>({
    url: "/openapi.json",
    pageTitle: "outbox-saga API",
    cdn: scriptUrl,
    withDefaultFonts: false,
  });
  let page: string | undefined;
  app.get("/docs", async (c, next) => {
    page ??= await ((await reference(c, next)) as Response).text();
    return c.html(page);
  });
}
