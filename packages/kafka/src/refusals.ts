/**
 * A connection refused for its security, found in an error of @platformatic/kafka: the library reports
 * it deep in a tree of retries ("metadata failed 2 times." ← "Cannot connect to any broker." ←
 * "Connection to host:port failed." ← the reason), and its top says nothing of it.
 */

/** Node's codes of a TLS handshake that failed on the certificate (not trusted, expired, another name). */
const CERTIFICATE_CODE = /CERT|SELF_SIGNED|UNABLE_TO_|ERR_TLS_|ERR_SSL_/;

/**
 * The refusal in `err`, as one error whose message names the broker and the reason: the SASL sign-in
 * refused (a wrong password, a mechanism the broker does not offer, a TLS listener reached without TLS)
 * or the broker's certificate not trusted. Undefined for any other failure (a broker away, a timeout),
 * which may pass. With `resetHandshakes`, also a TLS handshake the broker cut ("Please verify the broker
 * supports TLS"): what a plaintext listener does, but also a broker stopping in the middle of one, so it
 * names a failure without being taken for one that retrying cannot cure.
 */
export function securityRefusal(err: unknown, { resetHandshakes = false } = {}): Error | undefined {
  const seen = new Set<unknown>();
  const find = (e: unknown, connection: string | undefined): Error | undefined => {
    if (!(e instanceof Error) || seen.has(e)) return undefined;
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    const at = connection ? `${connection.replace(/\.$/, "")}: ` : "";
    if (code === "PLT_KFK_AUTHENTICATION")
      return new Error(`${at}SASL: ${e.message.replace(/^SASL /, "")}`, { cause: err });
    if (typeof code === "string" && CERTIFICATE_CODE.test(code))
      return new Error(`${at}TLS: ${e.message}`, { cause: err });
    if (resetHandshakes && code === "PLT_KFK_USER" && e.message.startsWith("TLS handshake failed"))
      return new Error(`${at}${e.message}`, { cause: err });
    const here =
      code === "PLT_KFK_NETWORK" && e.message.startsWith("Connection to ") ? e.message : connection;
    for (const inner of [...((e as Partial<AggregateError>).errors ?? []), e.cause]) {
      const found = find(inner, here);
      if (found) return found;
    }
    return undefined;
  };
  return find(err, undefined);
}
