import { freshDatabase } from "@saga/tools/test/harness";
import { useTlsPostgres } from "@saga/tools/test/tls-postgres";
import postgres from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { createDatabase } from "./client.ts";
import { connectionOptions, postgresJsOptions } from "./connection.ts";
import { migrateDatabase } from "./migrate.ts";
import { createPgDatabase } from "./pg-client.ts";

const SSL_OF_SESSION = "select ssl, client_dn from pg_stat_ssl where pid = pg_backend_pid()";

/** Whether the session of a node-postgres pool (the services', `npm run dlq`) on `url` is encrypted. */
async function throughPg(url: string): Promise<{ ssl: boolean; client_dn: string | null }> {
  const db = createPgDatabase(url, {}, { max: 1 });
  onTestFinished(() => db.close());
  return (await db.pool.query(SSL_OF_SESSION)).rows[0];
}

/** The same through postgres.js (the relay's connections, migrations, the order-service's LISTEN). */
async function throughPostgresJs(url: string): Promise<{ ssl: boolean; client_dn: string | null }> {
  const db = createDatabase(url, {}, { max: 1 });
  onTestFinished(() => db.close());
  const [row] = await db.sql<{ ssl: boolean; client_dn: string | null }[]>`${db.sql.unsafe(SSL_OF_SESSION)}`;
  if (!row) throw new Error("no row");
  return row;
}

/**
 * Why a connection was refused. A chain that ends at a CA not trusted fails as SELF_SIGNED_CERT_IN_CHAIN
 * when the server sends its CA along (OpenSSL completes the chain from its ssl_ca_file), else as
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE.
 */
function refusal(err: unknown): string {
  const code = (err as { code?: string }).code;
  if (code === "SELF_SIGNED_CERT_IN_CHAIN" || code === "UNABLE_TO_VERIFY_LEAF_SIGNATURE")
    return "untrusted certificate";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return "certificate of another host";
  return code ?? String(err);
}

describe("a database URL with TLS parameters, to a server whose certificate comes from a CA of its own", () => {
  const server = useTlsPostgres();

  it("connects migrations, a service pool and postgres.js over TLS with sslmode=verify-full&sslrootcert", async () => {
    const url = `${await server().createDatabase("tls_full")}?sslmode=verify-full&sslrootcert=${server().caFile}`;

    await expect(migrateDatabase(url, "order")).resolves.toEqual({ unknownMigrations: 0 });
    expect(await throughPg(url)).toMatchObject({ ssl: true });
    expect(await throughPostgresJs(url)).toMatchObject({ ssl: true });
  });

  it("refuses a certificate no trusted CA signed, with sslmode=require as with verify-full, in both drivers", async () => {
    const base = await server().createDatabase("tls_untrusted");
    const urls = [
      // Node's own CAs, which did not sign it.
      `${base}?sslmode=require`,
      `${base}?sslmode=verify-full`,
      `${base}?sslmode=require&sslrootcert=${server().otherCaFile}`,
      `${base}?sslmode=verify-ca&sslrootcert=${server().otherCaFile}`,
    ];
    for (const url of urls) {
      const pg = await throughPg(url).then(() => "connected", refusal);
      const js = await throughPostgresJs(url).then(() => "connected", refusal);
      expect({ url: url.slice(base.length), pg, js }).toEqual({
        url: url.slice(base.length),
        pg: "untrusted certificate",
        js: "untrusted certificate",
      });
    }
    expect(await migrateDatabase(urls[0] ?? "", "order").then(() => "migrated", refusal)).toBe(
      "untrusted certificate",
    );
  });

  it("checks the host name with verify-full (and require), not with verify-ca, in both drivers", async () => {
    // The certificate names localhost; the URL names 127.0.0.1.
    const base = `${await server().createDatabase("tls_names", "127.0.0.1")}?sslrootcert=${server().caFile}`;
    for (const mode of ["verify-full", "require"]) {
      const url = `${base}&sslmode=${mode}`;
      expect(await throughPg(url).then(() => "connected", refusal)).toBe("certificate of another host");
      expect(await throughPostgresJs(url).then(() => "connected", refusal)).toBe(
        "certificate of another host",
      );
    }
    const url = `${base}&sslmode=verify-ca`;
    expect(await throughPg(url)).toMatchObject({ ssl: true });
    expect(await throughPostgresJs(url)).toMatchObject({ ssl: true });
  });

  it("takes channel_binding=require, as providers' URLs carry it, without sending it to the server", async () => {
    const url = `${await server().createDatabase("tls_binding")}?sslmode=require&channel_binding=require&sslrootcert=${server().caFile}`;
    expect(await throughPostgresJs(url)).toMatchObject({ ssl: true });
    expect(await throughPg(url)).toMatchObject({ ssl: true });
  });

  it("presents the client certificate of sslcert and sslkey", async () => {
    const { caFile, clientCertFile, clientKeyFile } = server();
    const url = `${await server().createDatabase("tls_client")}?sslmode=verify-full&sslrootcert=${caFile}&sslcert=${clientCertFile}&sslkey=${clientKeyFile}`;
    expect(await throughPg(url)).toEqual({ ssl: true, client_dn: "/CN=postgres" });
    expect(await throughPostgresJs(url)).toEqual({ ssl: true, client_dn: "/CN=postgres" });
  });
});

describe("a database URL that would set the session's own settings", () => {
  it("is refused, so that ?statement_timeout=0 or options=-c… cannot switch the pools' bounds off", async () => {
    const url = await freshDatabase("url_settings");
    const bounds = { statementTimeoutMs: 300, idleInTransactionTimeoutMs: 400 };
    const db = createPgDatabase(url, {}, { max: 1, timeouts: bounds });
    onTestFinished(() => db.close());
    expect((await db.pool.query("show statement_timeout")).rows).toEqual([{ statement_timeout: "300ms" }]);

    for (const query of ["statement_timeout=0", "options=-c%20statement_timeout%3D0", "application_name=x"]) {
      const name = query.split("=")[0];
      const refused = new RegExp(`the parameter ${name} is not supported`);
      expect(() => createPgDatabase(`${url}?${query}`, {}, { timeouts: bounds })).toThrow(refused);
      expect(() => createDatabase(`${url}?${query}`, {}, { timeouts: bounds })).toThrow(refused);
      await expect(migrateDatabase(`${url}?${query}`, "order")).rejects.toThrow(refused);
    }
  });
});

describe("connectionOptions", () => {
  it("reads the server, database and credentials, percent-decoded", () => {
    expect(connectionOptions("postgresql://us%40er:p%3Ass@db.example:6432/order%5Fdb")).toEqual({
      host: "db.example",
      port: 6432,
      database: "order_db",
      user: "us@er",
      password: "p:ss",
      ssl: false,
    });
    expect(connectionOptions("postgres://[::1]/db")).toMatchObject({ host: "::1" });
    // No port in the URL: the drivers' own default, which reads PGPORT.
    expect(connectionOptions("postgres://h/db").port).toBeUndefined();
    expect(connectionOptions("postgres://%2Fvar%2Frun%2Fpostgresql/db")).toMatchObject({
      host: "/var/run/postgresql",
    });
  });

  it("refuses what one of the drivers could not do as asked, saying why, without repeating the URL", () => {
    const refusals: [string, RegExp][] = [
      ["postgres://h/db?sslmode=prefer", /sslmode=prefer is not supported: node-postgres cannot fall back/],
      ["postgres://h/db?sslmode=allow", /sslmode=allow is not supported/],
      ["postgres://h/db?sslmode=strict", /sslmode=strict is not one of disable, no-verify, require/],
      ["postgres://h/db?sslmode=require&sslcert=/c.pem", /sslcert and sslkey go together/],
      ["postgres://h/db?sslmode=disable&sslrootcert=/ca.pem", /sslmode=disable names certificate files/],
      ["postgres://h/db?channel_binding=require", /channel_binding=require needs TLS/],
      [
        "postgres://h/db?sslmode=no-verify&channel_binding=require",
        /channel_binding=require with sslmode=no-verify: nothing would authenticate the server/,
      ],
      [
        "postgres://h/db?sslmode=verify-ca&sslrootcert=system",
        /sslrootcert=system is for sslmode=verify-full/,
      ],
      ["postgres://h/db?sslmode=verify-ca", /sslmode=verify-ca needs sslrootcert/],
      [
        "postgres://h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
        /sslrootcert: cannot read \/no\/such\/ca.pem \(ENOENT\)/,
      ],
      ["postgres://h/db?sslmode=require&sslmode=disable", /sslmode is given more than once/],
      ["postgres://u:secret@h1:5432,h2:5432/db", /names several hosts/],
      ["postgres://u:secret@h/db?target_session_attrs=read-write", /target_session_attrs is not supported/],
      ["mysql://u:secret@h/db", /must be a postgres:\/\/ URL/],
    ];
    for (const [url, reason] of refusals) {
      let message = "";
      try {
        connectionOptions(url);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, url).toMatch(reason);
      expect(message).not.toContain("secret");
    }
  });

  it("gives no-verify, alone, an unchecked certificate; sslrootcert alone means verify-full", () => {
    expect(connectionOptions("postgres://h/db?sslmode=no-verify").ssl).toEqual({ rejectUnauthorized: false });
    expect(connectionOptions("postgres://h/db?sslrootcert=system").ssl).toMatchObject({
      rejectUnauthorized: true,
      servername: "h",
    });
  });
});

describe("postgresJsOptions", () => {
  it("gives postgres.js an IPv6 address and its port as they are, not split at their colons", async () => {
    for (const [url, host, port] of [
      ["postgres://u@[2001:db8::5]:5433/db", "2001:db8::5", 5433],
      ["postgres://u@[::1]:6543/db", "::1", 6543],
    ] as const) {
      // What postgres.js makes of them, as it would connect (no connection is opened).
      const sql = postgres({ ...postgresJsOptions(url), max: 1 });
      expect({ host: sql.options.host, port: sql.options.port }, url).toEqual({ host: [host], port: [port] });
      await sql.end();
    }
    // Any other host as before: a name (and its port), a Unix socket's directory.
    const named = postgres({ ...postgresJsOptions("postgres://u@db.example:6432/db"), max: 1 });
    expect({ host: named.options.host, port: named.options.port }).toEqual({
      host: ["db.example"],
      port: [6432],
    });
    await named.end();
    const socket = postgres({ ...postgresJsOptions("postgres://u@%2Fvar%2Frun%2Fpostgresql/db"), max: 1 });
    expect(socket.options.path).toBe("/var/run/postgresql/.s.PGSQL.5432");
    await socket.end();
  });
});
