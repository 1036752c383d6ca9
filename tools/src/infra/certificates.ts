import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestCertificates {
  /** The certificate of the authority that signed the server's (PEM): what a client is told to trust. */
  caFile: string;
  /** The server's unencrypted PKCS#8 key followed by its certificate (PEM), for 127.0.0.1 and localhost. */
  keyStoreFile: string;
  /** Another authority's certificate, which signed nothing here: trusting it alone must fail. */
  otherCaFile: string;
}

/**
 * A throwaway certificate authority and a server certificate it signed, made with `openssl` into `dir`;
 * valid for a day, EC P-256 keys.
 */
export async function createTestCertificates(dir: string): Promise<TestCertificates> {
  const file = (name: string) => join(dir, name);
  const authority = async (name: string) => {
    await openssl([
      "req",
      "-x509",
      ...ecKey(file(`${name}.key`)),
      "-subj",
      `/CN=${name}`,
      "-days",
      "1",
      "-out",
      file(`${name}.pem`),
    ]);
  };
  await authority("test-ca");
  await authority("other-ca");
  await openssl([
    "req",
    "-new",
    ...ecKey(file("server.key")),
    "-subj",
    "/CN=localhost",
    "-out",
    file("server.csr"),
  ]);
  await writeFile(file("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await openssl([
    "x509",
    "-req",
    "-in",
    file("server.csr"),
    "-CA",
    file("test-ca.pem"),
    "-CAkey",
    file("test-ca.key"),
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    file("server.ext"),
    "-out",
    file("server.pem"),
  ]);
  const keyStoreFile = file("server-keystore.pem");
  await writeFile(
    keyStoreFile,
    (await readFile(file("server.key"), "utf8")) + (await readFile(file("server.pem"), "utf8")),
  );
  return { caFile: file("test-ca.pem"), keyStoreFile, otherCaFile: file("other-ca.pem") };
}

/** A new P-256 key written unencrypted (PKCS#8, what OpenSSL 3 writes and Kafka's PEM key store reads). */
function ecKey(keyFile: string): string[] {
  return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile];
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args);
  } catch (err) {
    throw new Error(`openssl ${args[0]} failed: ${(err as { stderr?: string }).stderr ?? err}`, {
      cause: err,
    });
  }
}
