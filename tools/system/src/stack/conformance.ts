import type { ValidateFunction } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

/** The parts of an OpenAPI 3.1 document that a response is checked against. */
export type OpenApiDocument = {
  paths: Record<string, Record<string, Operation>>;
  components?: { responses?: Record<string, ResponseObject>; schemas?: Record<string, unknown> };
};
type Operation = { responses: Record<string, ResponseObject | { $ref: string }> };
type HeaderObject = { schema?: object; required?: boolean };
type ResponseObject = {
  description: string;
  headers?: Record<string, HeaderObject>;
  content?: Record<string, { schema?: object }>;
};

/** A response as received: status, headers (any case) and the body's text. */
export type ReceivedResponse = { status: number; headers: Headers; body: string };

const DOCUMENT_ID = "openapi.json";

/**
 * Checks responses against an OpenAPI 3.1 document: the status must be declared for the operation,
 * the Content-Type must be one the declared response has (none for a response without content), the
 * body must validate against its schema (JSON Schema 2020-12, with ajv), and every header the
 * response declares `required` must be there and, like every declared header present, fit its schema.
 * Returns what is wrong, empty when nothing is.
 */
export function createResponseValidator(document: OpenApiDocument) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  // The document is the root that `#/components/schemas/…` references resolve against.
  ajv.addSchema({ ...document, $id: DOCUMENT_ID });
  const compiled = new Map<string, ValidateFunction>();
  const compile = (schema: object) => {
    const rooted = JSON.stringify(schema).replaceAll('"#/components/', `"${DOCUMENT_ID}#/components/`);
    let validate = compiled.get(rooted);
    if (!validate) {
      validate = ajv.compile(JSON.parse(rooted));
      compiled.set(rooted, validate);
    }
    return validate;
  };
  const templates = Object.keys(document.paths).map((template) => ({
    template,
    pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`),
  }));

  /** The document's operation for a request, or undefined when it declares none. */
  function operationOf(method: string, url: string) {
    const path = new URL(url, "http://x").pathname;
    const template = templates.find((t) => t.pattern.test(path))?.template;
    const operation = template ? document.paths[template]?.[method.toLowerCase()] : undefined;
    return operation && { template, operation };
  }

  function resolve(response: ResponseObject | { $ref: string }): ResponseObject {
    if (!("$ref" in response)) return response;
    const name = response.$ref.replace("#/components/responses/", "");
    const resolved = document.components?.responses?.[name];
    if (!resolved) throw new Error(`the document's ${response.$ref} does not exist`);
    return resolved;
  }

  /** What is wrong with `res` as the answer to `method url`, by the document. */
  function check(method: string, url: string, res: ReceivedResponse): string[] {
    const found = operationOf(method, url);
    if (!found) return [`${method} ${url}: the document declares no such operation`];
    const where = `${method} ${found.template} → ${res.status}`;
    const declared = found.operation.responses[String(res.status)] ?? found.operation.responses.default;
    if (!declared)
      return [`${where}: status not declared (declared: ${Object.keys(found.operation.responses)})`];
    const response = resolve(declared);
    const problems: string[] = [];

    for (const [name, header] of Object.entries(response.headers ?? {})) {
      const value = res.headers.get(name);
      if (value === null) {
        if (header.required) problems.push(`${where}: required header ${name} missing`);
        continue;
      }
      if (header.schema) {
        const type = (header.schema as { type?: string }).type;
        const typed = type === "integer" || type === "number" ? Number(value) : value;
        const validate = compile(header.schema);
        if (!validate(typed))
          problems.push(`${where}: header ${name}: ${value}: ${ajv.errorsText(validate.errors)}`);
      }
    }

    const mediaType = (res.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    if (!response.content) {
      if (res.body !== "") problems.push(`${where}: declared without content, got a body (${mediaType})`);
      return problems;
    }
    const content = response.content[mediaType];
    if (!content) {
      problems.push(`${where}: content type "${mediaType}" not declared (${Object.keys(response.content)})`);
      return problems;
    }
    if (content.schema && mediaType.endsWith("json")) {
      let body: unknown;
      try {
        body = JSON.parse(res.body);
      } catch {
        problems.push(`${where}: body is not JSON: ${res.body.slice(0, 200)}`);
        return problems;
      }
      const validate = compile(content.schema);
      if (!validate(body)) {
        problems.push(
          `${where}: body ${JSON.stringify(body).slice(0, 300)}: ${ajv.errorsText(validate.errors)}`,
        );
      }
    }
    return problems;
  }

  /** Validates a value against one of the document's named schemas (`Error`), for answers outside any operation. */
  function checkSchema(name: string, value: unknown): string[] {
    const validate = compile({ $ref: `#/components/schemas/${name}` });
    return validate(value) ? [] : [`${name}: ${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`];
  }

  return { check, checkSchema };
}
