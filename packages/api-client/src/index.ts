import createClient, { type Client, type ClientOptions } from "openapi-fetch";
import type { paths } from "./schema.d.ts";

export type { components, operations, paths } from "./schema.d.ts";

/** A client of the gateway's API, typed by its OpenAPI document: paths, parameters, bodies, statuses. */
export type ApiClient = Client<paths>;

export type ApiClientOptions = {
  /** The gateway, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer …` on every request; a request's own `authorization` header wins. */
  token?: string;
  /** The fetch to send with (a load client's own connection pool); the global fetch by default. */
  fetch?: ClientOptions["fetch"];
};

/**
 * A typed client of the gateway (openapi-fetch over the types openapi-typescript generated from the
 * document in src/schema.d.ts): `client.POST("/orders", { body: { userId, amount } })` resolves to
 * `{ data, error, response }`, where `data` is the 201's order and `error` a documented error body.
 */
export function createApiClient({ baseUrl, token, fetch }: ApiClientOptions): ApiClient {
  return createClient<paths>({
    baseUrl,
    ...(fetch ? { fetch } : {}),
    ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
}
