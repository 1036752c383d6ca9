import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { createDatabase } from "../infra/admin.ts";
import { freePort } from "../infra/ports.ts";
import { removeDataDir, startPostgres } from "../infra/postgres.ts";

/** A PostgreSQL server of a test's own that serves TLS, and the files a client needs to trust it. */
export interface TlsPostgres {
  /**
   * A new database on the server, as `postgres://postgres@<host>:<port>/<name>` without parameters (a
   * test adds its own). `localhost`, the certificate's one name, by default.
   */
  createDatabase(prefix: string, host?: "localhost" | "127.0.0.1"): Promise<string>;
  /** The CA that signed the server's certificate (and the client's). */
  readonly caFile: string;
  /** A CA that signed nothing of this server's: trusting it alone must refuse the server. */
  readonly otherCaFile: string;
  /** A client certificate for the role `postgres`, signed by the CA, which the server checks when sent. */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

/**
 * At suite level: a throwaway PostgreSQL with TLS on, its certificate (for the name `localhost` only, not
 * 127.0.0.1) from a CA made with openssl for the suite. Plain connections are accepted too. The test run's
 * shared server is left as it is.
 */
export function useTlsPostgres(): () => TlsPostgres {
  let server: TlsPostgres | undefined;
  let cleanup: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), "tls-postgres-"));
    // PostgreSQL refuses to run as root, so as root it runs as another account that must reach the directory.
    await chmod(dir, 0o755);
    const file = (name: string) => join(dir, name);
    makeCa(dir, "ca");
    makeCa(dir, "other-ca");
    makeLeaf(dir, "server", "localhost", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n");
    makeLeaf(dir, "client", "postgres", "extendedKeyUsage=clientAuth\n");
    const port = await freePort();
    const dataDir = file("pg");
    const postgres = await startPostgres({
      dataDir,
      port,
      durable: false,
      tls: {
        cert: await readFile(file("server.crt"), "utf8"),
        key: await readFile(file("server.key"), "utf8"),
        clientCa: await readFile(file("ca.crt"), "utf8"),
      },
    });
    cleanup = async () => {
      await postgres.stop();
      await removeDataDir(dataDir);
      await rm(dir, { recursive: true, force: true });
    };
    server = {
      async createDatabase(prefix, host = "localhost") {
        const name = `${prefix}_${Math.random().toString(36).slice(2, 10)}`;
        await createDatabase(postgres.url, name);
        return `postgres://postgres@${host}:${port}/${name}`;
      },
      caFile: file("ca.crt"),
      otherCaFile: file("other-ca.crt"),
      clientCertFile: file("client.crt"),
      clientKeyFile: file("client.key"),
    };
  }, 120_000);
  afterAll(() => cleanup?.());
  return () => {
    if (!server) throw new Error("useTlsPostgres(): the server runs from the suite's beforeAll on");
    return server;
  };
}

function openssl(dir: string, args: string[]): void {
  const run = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${run.stderr || run.error}`);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-subj",
    `/CN=saga test ${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

function makeLeaf(dir: string, name: string, commonName: string, extensions: string): void {
  openssl(dir, [
    "req",
    "-new",
    ...EC_KEY,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${commonName}`,
  ]);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  ]);
}
