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
  if (!parsed.success) throw new AppError("BAD_REQUEST", z.prettifyError(parsed.error).replaceAll("\n", "; "));
  return parsed.data;
}

/** A path parameter that must be a UUID; anything else is a 400. */
export function uuidParam(c: Context, name: string): string {
  const value = c.req.param(name) ?? "";
  if (!z.uuid().safeParse(value).success) throw new AppError("BAD_REQUEST", `${name} must be a UUID`);
  return value.toLowerCase();
}
