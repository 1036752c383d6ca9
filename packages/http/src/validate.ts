import { IDEMPOTENCY_KEY_HEADER } from "@saga/contracts";
import type { Context } from "hono";
import { z } from "zod";
import { AppError } from "./errors.ts";

/** Parses the JSON body against a schema; anything else is a 400 that says what is wrong. */
export async function parseJsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw new AppError("BAD_REQUEST", "request body is not valid JSON");
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success)
    throw new AppError("BAD_REQUEST", z.prettifyError(parsed.error).replaceAll("\n", "; "));
  return parsed.data;
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
  if (!/^[\x21-\x7e]{1,200}$/.test(key)) {
    throw new AppError("BAD_REQUEST", "Idempotency-Key must be 1 to 200 visible ASCII characters");
  }
  return key;
}
