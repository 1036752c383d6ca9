import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { checkServerIdentity, type ConnectionOptions as TlsOptions } from "node:tls";

/**
 * Where and how to connect, read from a PostgreSQL URL, in a shape both drivers take as it is:
 * `postgres({ ...connectionOptions(url), … })` and `new pg.Pool({ ...connectionOptions(url), … })`.
 */
export type ConnectionOptions = {
  /** A host name or address, or the directory of a Unix socket; the drivers' default (localhost) when absent. */
  host?: string;
  /** The URL's port; when it names none, the drivers' default (`PGPORT`, else 5432). */
  port?: number;
  database?: string;
  user?: string;
  password?: string;
  /** `false`: no TLS. Otherwise the options of `tls.connect`, which both drivers pass on. */
  ssl: false | TlsOptions;
};

/**
 * The values of `sslmode` taken. `require` is `verify-full` here, as node-postgres 8 has it, not libpq's
 * "encrypt but trust any certificate": an unchecked certificate lets anyone on the path read and answer in
 * the server's place. `no-verify` (node-postgres's name) is that weaker mode, asked for by name.
 */
const SSL_MODES = ["disable", "no-verify", "require", "verify-ca", "verify-full"] as const;

/** The URL parameters taken; any other is refused (as libpq refuses a parameter it does not know). */
const URL_PARAMETERS = [
  "sslmode",
  "sslrootcert",
  "sslcert",
  "sslkey",
  "sslpassword",
  "channel_binding",
] as const;

const CHANNEL_BINDINGS = ["disable", "prefer", "require"];

/**
 * Reads a PostgreSQL URL once, for postgres.js and node-postgres alike. Neither driver is given the URL
 * itself, since they read its parameters by different rules: postgres.js sent every parameter it did not
 * know to the server as a session setting (after ours, so `?statement_timeout=0` switched our bound off,
 * and libpq's `sslrootcert` or `channel_binding` failed the connection as an unknown setting), and took
 * `sslmode=require` as "trust any certificate", where node-postgres checks it.
 *
 * Taken (`URL_PARAMETERS`): `sslmode` (`SSL_MODES`; without it, no TLS unless a certificate file is named,
 * then `verify-full`), `sslrootcert` (a PEM file of the CAs to trust instead of Node's, or `system`),
 * `sslcert` and `sslkey` (a client certificate, both or neither), `sslpassword` (the key's passphrase) and
 * `channel_binding`, which is accepted for the URLs providers hand out but not enforced (neither driver
 * can insist on SCRAM channel binding; the server is authenticated by its certificate). Refused, with a
 * reason: any other parameter, a server setting (`options`, `statement_timeout`: every process sets its
 * own session bounds, `db/src/session.ts`), `sslmode=prefer` or `allow` (node-postgres cannot fall back
 * to an unencrypted connection), `verify-ca` without `sslrootcert`, several hosts (node-postgres takes
 * one). Files are read now. No error repeats the URL, which may carry a password.
 */
export function connectionOptions(url: string): ConnectionOptions {
  if (/^[^:]*:\/\/(?:[^@/?#]*@)?[^/?#]*,/.test(url))
    throw new Error("names several hosts; one is taken (node-postgres connects to one host)");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error("must be a postgres:// URL (it does not parse as a URL)");
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:")
    throw new Error("must be a postgres:// URL");
  const params = parsed.searchParams;
  for (const name of new Set(params.keys())) {
    if (!(URL_PARAMETERS as readonly string[]).includes(name)) throw new Error(unsupported(name));
    if (params.getAll(name).length > 1) throw new Error(`the parameter ${name} is given more than once`);
  }
  const host = decoded(parsed.hostname.replace(/^\[(.*)\]$/, "$1"));
  const database = decoded(parsed.pathname.slice(1));
  return {
    host: host || undefined,
    port: parsed.port ? Number(parsed.port) : undefined,
    database: database || undefined,
    user: decoded(parsed.username) || undefined,
    password: decoded(parsed.password) || undefined,
    ssl: tlsOptions(params, host),
  };
}

/**
 * `connectionOptions` as postgres.js takes them. It splits a host string at its colons, so an IPv6
 * address (`2001:db8::5`) became the host `2001` and the port NaN, and `::1` the empty host (localhost
 * over IPv4); it takes a list of hosts, with a list of ports, as they are. An IPv6 address goes as such a
 * list; any other host stays a string, which postgres.js needs to find a Unix socket's path.
 */
export function postgresJsOptions(url: string): ConnectionOptions {
  const options = connectionOptions(url);
  const { host, port } = options;
  if (host === undefined || !host.includes(":")) return options;
  // postgres.js's Options type says a string, where its code (and its BaseOptions type) takes a list.
  return {
    ...options,
    host: [host] as unknown as string,
    port: [port ?? (Number(process.env.PGPORT) || 5432)] as unknown as number,
  };
}

function unsupported(name: string): string {
  return `the parameter ${name} is not supported: the URL names the server, database, user and TLS (${URL_PARAMETERS.join(", ")}) and sets nothing in the session (each process sets its own bounds; a setting of yours belongs to the role or database: ALTER ROLE … SET)`;
}

function tlsOptions(params: URLSearchParams, host: string): false | TlsOptions {
  const rootCert = params.get("sslrootcert");
  const cert = params.get("sslcert");
  const key = params.get("sslkey");
  const passphrase = params.get("sslpassword");
  const files = rootCert !== null || cert !== null || key !== null;
  const mode = params.get("sslmode") ?? (files ? "verify-full" : "disable");
  if (mode === "prefer" || mode === "allow")
    throw new Error(
      `sslmode=${mode} is not supported: node-postgres cannot fall back to an unencrypted connection; say disable, or require to insist on TLS`,
    );
  if (!(SSL_MODES as readonly string[]).includes(mode))
    throw new Error(`sslmode=${mode} is not one of ${SSL_MODES.join(", ")}`);
  const binding = params.get("channel_binding");
  if (binding !== null && !CHANNEL_BINDINGS.includes(binding))
    throw new Error(`channel_binding=${binding} is not one of ${CHANNEL_BINDINGS.join(", ")}`);

  if (mode === "disable") {
    if (files || passphrase !== null)
      throw new Error("sslmode=disable names certificate files: say sslmode=verify-full to use them");
    if (binding === "require")
      throw new Error("channel_binding=require needs TLS, which sslmode=disable turns off");
    return false;
  }
  if (host.startsWith("/"))
    throw new Error(
      `sslmode=${mode} with a Unix socket: PostgreSQL offers no TLS there; say sslmode=disable`,
    );
  if ((cert === null) !== (key === null))
    throw new Error("sslcert and sslkey go together: give both or neither");
  if (passphrase !== null && key === null)
    throw new Error("sslpassword is the passphrase of sslkey, which is not given");

  if (mode === "no-verify" && binding === "require")
    throw new Error(
      "channel_binding=require with sslmode=no-verify: nothing would authenticate the server (the certificate is not checked, and neither driver can insist on channel binding); say sslmode=verify-full",
    );
  const tls: TlsOptions = { rejectUnauthorized: mode !== "no-verify" };
  if (rootCert === "system") {
    // libpq's meaning: the system's trusted CAs, for a certificate checked in full.
    if (mode !== "verify-full" && mode !== "require")
      throw new Error(`sslrootcert=system is for sslmode=verify-full, not ${mode}`);
  } else if (rootCert !== null) {
    tls.ca = readPem("sslrootcert", rootCert);
  }
  if (mode === "verify-ca" && rootCert === null)
    throw new Error(
      "sslmode=verify-ca needs sslrootcert: with public CAs, a certificate they signed for any host would do; say verify-full",
    );
  if (cert !== null && key !== null) {
    tls.cert = readPem("sslcert", cert);
    tls.key = readPem("sslkey", key);
    if (passphrase !== null) tls.passphrase = passphrase;
  }
  if (mode === "verify-ca") {
    tls.checkServerIdentity = () => undefined;
  } else if (mode !== "no-verify") {
    // Checked against the URL's host by us, not against whatever name each driver hands to TLS.
    const name = host || "localhost";
    if (isIP(name) === 0) tls.servername = name;
    tls.checkServerIdentity = (_servername, peer) => checkServerIdentity(name, peer);
  }
  return tls;
}

function decoded(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new Error("must be a postgres:// URL (a part of it is not percent-encoded right)");
  }
}

function readPem(parameter: string, path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`${parameter}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? err})`, {
      cause: err,
    });
  }
}
