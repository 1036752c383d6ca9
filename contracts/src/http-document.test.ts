import { describe, expect, it } from "vitest";
import { CreateUserRequest } from "./http.ts";
import { createOpenApiDocument } from "./openapi.ts";

type StringSchema = { type: string; minLength?: number; maxLength?: number; pattern?: string };

/** What JSON Schema says of a string: lengths in code points, the pattern as an ECMA-262 regex. */
function documentAccepts(schema: StringSchema, value: string): boolean {
  const length = [...value].length;
  if (schema.minLength !== undefined && length < schema.minLength) return false;
  if (schema.maxLength !== undefined && length > schema.maxLength) return false;
  return schema.pattern === undefined || new RegExp(schema.pattern, "u").test(value);
}

// Schemathesis found the document calling usernames valid that the gateway refused (control characters,
// a blank name, lengths counted in UTF-16 units) and, the other way, refusing names the service accepted
// (a control character or a 65th character trimmed away): the two must agree on every name.
describe("POST /users' username in the OpenAPI document", () => {
  const document = createOpenApiDocument() as unknown as {
    components: { schemas: { CreateUserRequest: { properties: { username: StringSchema } } } };
  };
  const schema = document.components.schemas.CreateUserRequest.properties.username;

  it.each([
    "alice",
    "zoë ✓",
    " a ",
    "\u3000a",
    "😀".repeat(64),
    "😀".repeat(65),
    `${" ".repeat(10)}${"a".repeat(60)}`,
    "a".repeat(64),
    "",
    " ",
    "\t",
    "a\t",
    "a\u0000b",
    "\u0001\u001e\u0011",
    "a\u007f",
  ])("accepts %j exactly when the service does", (username) => {
    const served = CreateUserRequest.safeParse({ username, initialBalance: 1 }).success;
    expect(documentAccepts(schema, username)).toBe(served);
  });
});
