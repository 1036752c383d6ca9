import { IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_PATTERN } from "@saga/contracts";
import type { Context } from "hono";
import { z } from "zod";
import { requestBody } from "./body-limit.ts";
import { AppError } from "./errors.ts";

const utf8 = new TextDecoder();

// application/json, or a structured syntax suffix (application/merge-patch+json), with any parameters.
const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json\s*(;|$)/i;

/**
 * Parses the JSON body against a schema; anything else is a 400 that says what is wrong. A body
 * declared as something other than JSON is a 415; one without a Content-Type is read as JSON.
 */
export async function parseJsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  const type = c.req.header("content-type");
  if (type !== undefined && !JSON_MEDIA_TYPE.test(type.trim())) {
    throw new AppError("UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json");
  }
  let body: unknown;
  try {
    body = JSON.parse(utf8.decode(await requestBody(c)));
  } catch {
    throw new AppError("BAD_REQUEST", "request body is not valid JSON");
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new AppError("BAD_REQUEST", describeIssues(parsed.error));
  return parsed.data;
}

/**
 * What is wrong with a body, one clause per field: `amount: Too small: expected number to be >=1`. The
 * first issue of each field only (zod can report one value against two checks, `int` and `number`), and
 * `body` for the body as a whole.
 */
function describeIssues(error: z.ZodError): string {
  const byField = new Map<string, string>();
  for (const issue of error.issues) {
    const field = issue.path.length === 0 ? "body" : issue.path.map(String).join(".");
    if (!byField.has(field)) byField.set(field, `${field}: ${issue.message}`);
  }
  return [...byField.values()].join("; ");
}

/** A path parameter that must be a UUID; anything else is a 400. */
export function uuidParam(c: Context, name: string): string {
  const value = c.req.param(name) ?? "";
  if (!z.uuid().safeParse(value).success) throw new AppError("BAD_REQUEST", `${name} must be a UUID`);
  return value.toLowerCase();
}

/**
 * The request's `Idempotency-Key`, or undefined when it has none. A key must be 1 to 200 visible
 * ASCII characters; anything else is a 400.
 */
export function idempotencyKey(c: Context): string | undefined {
  const key = c.req.header(IDEMPOTENCY_KEY_HEADER);
  if (key === undefined) return undefined;
  if (!IDEMPOTENCY_KEY_PATTERN.test(key)) {
    throw new AppError("BAD_REQUEST", "Idempotency-Key must be 1 to 200 visible ASCII characters");
  }
  return key;
}
