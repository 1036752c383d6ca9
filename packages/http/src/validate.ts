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
    body = parseExactJson(utf8.decode(await requestBody(c)));
  } catch (err) {
    if (err instanceof InexactNumber) throw new AppError("BAD_REQUEST", err.message);
    throw new AppError("BAD_REQUEST", "request body is not valid JSON");
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new AppError("BAD_REQUEST", describeIssues(parsed.error));
  return parsed.data;
}

class InexactNumber extends Error {}

/** What `JSON.parse` tells a reviver of a primitive since Node 21: the literal as written. */
type ReviverContext = { source?: string };

/**
 * `JSON.parse`, refusing a number written with a fraction that the conversion to a double rounds away:
 * `1.0000000000000001` reads as 1, `1e-400` as 0, and a schema's integer check then passes a value the
 * client did not write (an amount of 1 for one of 1.0000000000000001). Such a literal throws
 * `InexactNumber` naming the field. An integer written another way (`7.0`, `1e3`) is the integer it
 * denotes, as JSON Schema's `integer` reads it, and passes.
 */
export function parseExactJson(text: string): unknown {
  return JSON.parse(text, (key: string, value: unknown, context?: ReviverContext) => {
    const source = context?.source;
    if (
      typeof value === "number" &&
      Number.isInteger(value) &&
      source !== undefined &&
      !denotesInteger(source)
    ) {
      throw new InexactNumber(`${key || "body"}: ${source} is not an integer, and would be read as ${value}`);
    }
    return value;
  });
}

/** Whether a JSON number literal denotes an integer: no non-zero digit after the point once its exponent is applied. */
function denotesInteger(literal: string): boolean {
  const m = /^-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (!m) return false;
  const whole = m[1] ?? "";
  const digits = whole + (m[2] ?? "");
  const point = whole.length + Number(m[3] ?? 0);
  return /^0*$/.test(digits.slice(Math.max(0, point)));
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
