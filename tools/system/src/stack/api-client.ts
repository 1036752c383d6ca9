import { type ApiClient, createApiClient } from "@saga/api-client";
import { type Dispatcher, fetch as undiciFetch } from "undici";

/**
 * The gateway's typed client (@saga/api-client, generated from its OpenAPI document), sending through
 * `dispatcher`: a load client's own keep-alive pool, so that connection set-up is not counted as the
 * system's latency and the global fetch's pool does not bound the load.
 */
export function pooledApiClient(gatewayUrl: string, dispatcher: Dispatcher): ApiClient {
  return createApiClient({
    baseUrl: gatewayUrl,
    // openapi-fetch hands over a Request of Node's own fetch; undici's fetch takes its parts.
    fetch: async (request) =>
      (await undiciFetch(request.url, {
        method: request.method,
        headers: [...request.headers],
        body: request.body ? await request.arrayBuffer() : undefined,
        signal: request.signal,
        dispatcher,
      })) as unknown as Response,
  });
}

/** What a failed request's error says: undici's code (a timeout, a refused connection), or its name. */
export function errorCode(err: unknown): string {
  const e = err as { code?: string; name?: string; cause?: { code?: string } };
  return e.cause?.code ?? e.code ?? e.name ?? "Error";
}
