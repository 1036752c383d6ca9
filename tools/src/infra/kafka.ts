import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { Admin } from "@platformatic/kafka";
import { cacheDir, repoRoot } from "./paths.ts";
import { freePort } from "./ports.ts";
import { supervise, tail } from "./supervise.ts";

/**
 * The broker version; tools/kafka/pom.xml says why this one. kafka.test.ts proves that
 * kafkajs 2.2.4 produces (plain and idempotent) and runs consumer groups against it.
 */
export const KAFKA_VERSION = "4.4.0";

export type Log = (line: string) => void;

/**
 * The settings a broker of one node needs, the same wherever it runs: here, in the Docker test infra
 * and in compose.yaml (monitoring/test/compose.test.ts checks compose's).
 */
export const SINGLE_NODE_SETTINGS = {
  // Internal topics default to 3 replicas, which one node cannot host: no consumer group could commit.
  "offsets.topic.replication.factor": 1,
  "transaction.state.log.replication.factor": 1,
  "transaction.state.log.min.isr": 1,
  "share.coordinator.state.topic.replication.factor": 1,
  "share.coordinator.state.topic.min.isr": 1,
  // Without this a group's first rebalance waits 3s for more members to join.
  // https://kafka.apache.org/documentation/#brokerconfigs_group.initial.rebalance.delay.ms
  "group.initial.rebalance.delay.ms": 0,
} as const;

/**
 * Broker settings as the environment of a Kafka image, apache/kafka or confluentinc/cp-kafka: `KAFKA_` and
 * the name upper-cased with `.` as `_`. The two escape `_` and `-` differently (apache: `__`, `___`;
 * confluent: `___`, `__`), so a name with either is refused.
 * https://github.com/apache/kafka/blob/trunk/docker/examples/README.md
 * https://docs.confluent.io/platform/current/installation/docker/config-reference.html
 */
export function kafkaImageEnvironment(settings: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(settings).map(([key, value]) => {
      if (!/^[a-z0-9.]+$/.test(key)) throw new Error(`${key}: only names of letters, digits and dots`);
      return [`KAFKA_${key.toUpperCase().replaceAll(".", "_")}`, String(value)];
    }),
  );
}

export interface KafkaOptions {
  dataDir: string;
  port: number;
  /** The KRaft controller listener, also on loopback. */
  controllerPort: number;
  /**
   * More client listeners, each advertising another address (a proxy in front of it): a client is
   * sent back to the advertised address of the listener it bootstrapped through, so all its
   * connections go through that proxy. `port` stays the direct listener, also between brokers.
   * https://kafka.apache.org/documentation/#brokerconfigs_advertised.listeners
   */
  proxiedListeners?: { name: string; port: number; advertisedPort: number }[];
  /** A client listener that asks for TLS and SASL, as a managed Kafka does (see `SecureListener`). */
  secureListener?: SecureListener;
  logFile?: string;
  /** Throwaway brokers get 3s, not 30s, to shut down before SIGKILL: their data is deleted anyway. */
  durable?: boolean;
  /** Writes a class-data archive to this file when the broker exits (see prepareKafka). */
  writeArchive?: string;
  log?: Log;
}

/**
 * A listener named SECURE whose clients must speak TLS and authenticate with SASL (SASL_SSL), for tests of
 * the clients' security settings; the other listeners stay as they are. Each user can sign in with PLAIN,
 * SCRAM-SHA-256 and SCRAM-SHA-512: PLAIN's users are in the listener's JAAS configuration, SCRAM's
 * credentials are written into the metadata log when the storage is formatted (so a broker with this
 * listener formats its own storage, a JVM start more than one copied from the cache).
 * https://kafka.apache.org/documentation/#security_sasl_scram_credentials
 */
export interface SecureListener {
  port: number;
  /** A PEM file holding the broker's unencrypted PKCS#8 private key and its certificate chain. */
  keyStoreFile: string;
  /** Password of each user, by name; names and passwords of letters, digits, `-` and `_`. */
  users: Record<string, string>;
}

/** The SASL mechanisms the secure listener offers. */
const SECURE_LISTENER_MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] as const;

export interface KafkaServer {
  readonly brokers: string[];
  /** The addresses of the secure listener, when there is one. */
  readonly secureBrokers?: string[];
  readonly version: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Resolves the broker's jars with Maven into `.cache/kafka/<version>/libs` unless they are
 * there already. Safe to run concurrently: each run fills its own directory and renames it.
 */
async function ensureKafkaJars(log: Log = () => {}, version = KAFKA_VERSION): Promise<string> {
  const home = join(cacheDir, "kafka", version);
  const libs = join(home, "libs");
  if (existsSync(libs)) return libs;

  log(`kafka: resolving Apache Kafka ${version} jars with Maven (first run only)`);
  const started = performance.now();
  const staging = join(home, `libs.${process.pid}.${randomBytes(4).toString("hex")}`);
  await mkdir(home, { recursive: true });
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const mvn = spawn(
      "mvn",
      [
        "-B",
        // Strict checksums: a jar whose download does not match the repository's checksum fails the run
        // instead of being cached with a warning. Jars already in ~/.m2 are not fetched again.
        "-C",
        "-f",
        join(repoRoot, "tools/kafka/pom.xml"),
        "dependency:copy-dependencies",
        `-Dkafka.version=${version}`,
        `-Dkafka.libs=${staging}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    mvn.once("error", (err) =>
      reject(new Error("could not run `mvn`: run `npm run setup` or install Maven", { cause: err })),
    );
    // Maven prints a line per download (the broker's jars and Maven's own plugins); we
    // sum them up in a progress line every few seconds.
    let files = 0;
    let lastReport = performance.now();
    for (const stream of [mvn.stdout, mvn.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        output.push(line);
        const done = /Downloaded from \S+: (\S+\.jar) /.exec(line);
        if (!done?.[1]) return;
        files++;
        if (performance.now() - lastReport < 2000) return;
        lastReport = performance.now();
        log(`kafka:   downloaded ${files} jar${files === 1 ? "" : "s"} so far (latest ${basename(done[1])})`);
      });
    }
    mvn.once("close", resolve);
  });
  if (code !== 0) {
    await rm(staging, { recursive: true, force: true });
    throw new Error(`mvn failed (code ${code}):\n${output.slice(-40).join("\n")}`);
  }
  const jars = (await readdir(staging)).length;
  await rename(staging, libs).catch(async (err: NodeJS.ErrnoException) => {
    // Another run finished first; its copy is as good as ours.
    if (!existsSync(libs)) throw err;
    await rm(staging, { recursive: true, force: true });
  });
  log(`kafka: ${jars} jars ready in ${((performance.now() - started) / 1000).toFixed(1)}s`);
  return libs;
}

/**
 * What `npm run setup` prepares so that every later broker starts in about two seconds:
 * the jars, a formatted storage directory to copy, and a dynamic class-data archive of
 * the broker's classes, written by one throwaway broker as it exits. Brokers without the
 * archive still work, a second or so slower to start.
 * https://docs.oracle.com/en/java/javase/17/vm/class-data-sharing.html
 */
export async function prepareKafka(log: Log = () => {}): Promise<void> {
  const libs = await ensureKafkaJars(log);
  const archive = classArchive(libs);
  if (existsSync(archive)) return;
  log("kafka: starting a broker once to write its class-data archive (first run only)");
  const started = performance.now();
  const staging = `${archive}.${process.pid}.${randomBytes(4).toString("hex")}`;
  const dataDir = `${staging}.data`;
  try {
    const broker = await startKafka({
      dataDir,
      port: await freePort(),
      controllerPort: await freePort(),
      durable: false,
      writeArchive: staging,
    });
    await broker.stop();
    // Only a start-up speed-up: a broker stopped too slowly to dump it (a loaded machine) is no reason
    // to fail the setup; the next one tries again.
    if (!existsSync(staging)) {
      log("kafka: the broker exited without writing its class-data archive; brokers start without it");
      return;
    }
    await rename(staging, archive);
  } finally {
    await rm(staging, { force: true });
    await rm(dataDir, { recursive: true, force: true });
    await rm(`${dataDir}.log`, { force: true });
  }
  log(`kafka: class-data archive ready in ${((performance.now() - started) / 1000).toFixed(1)}s`);
}

function classArchive(libs: string): string {
  return join(libs, "..", "classes.jsa");
}

/**
 * Starts a single-node KRaft broker (broker and controller in one JVM) listening on
 * 127.0.0.1 only, formatting `dataDir` on first use, and resolves once it answers a
 * metadata request.
 */
export async function startKafka(opts: KafkaOptions): Promise<KafkaServer> {
  const log = opts.log ?? (() => {});
  const libs = await ensureKafkaJars(log);
  const logFile = opts.logFile ?? `${opts.dataDir}.log`;
  const configFile = join(opts.dataDir, "server.properties");
  await mkdir(opts.dataDir, { recursive: true });
  const logDir = join(opts.dataDir, "logs");
  await writeFile(configFile, serverProperties(opts, logDir));
  const java = javaCommand();
  if (!existsSync(join(logDir, "meta.properties"))) {
    if (opts.secureListener)
      await format(
        java,
        libs,
        configFile,
        scramCredentials(opts.secureListener),
        join(opts.dataDir, "format.log"),
      );
    else await cp(await formattedStorage(java, libs, opts), logDir, { recursive: true });
  }

  const archive = classArchive(libs);
  const server = await supervise({
    command: java,
    args: [
      ...(opts.writeArchive ? [`-XX:ArchiveClassesAtExit=${opts.writeArchive}`] : []),
      ...(!opts.writeArchive && existsSync(archive) ? [`-XX:SharedArchiveFile=${archive}`] : []),
      ...jvmFlags(libs, "1g"),
      "kafka.Kafka",
      configFile,
    ],
    logFile,
    // SIGTERM runs the broker's shutdown hook (a clean, controlled shutdown); writing an
    // archive at exit takes a while longer.
    stopSignal: "SIGTERM",
    graceSeconds: opts.durable === false && !opts.writeArchive ? 3 : 30,
  });
  const stop = async () => {
    await server.stop();
  };
  const brokers = [`127.0.0.1:${opts.port}`];
  try {
    await waitUntilReady(brokers, server.exited, logFile);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    brokers,
    ...(opts.secureListener && { secureBrokers: [`127.0.0.1:${opts.secureListener.port}`] }),
    version: KAFKA_VERSION,
    pid: server.pid,
    stop,
  };
}

/**
 * KRaft storage must be formatted before the first start.
 * https://kafka.apache.org/documentation/#kraft_storage
 * With a static quorum the formatted directory does not depend on ports or paths, so we
 * format once into the cache and copy it: a JVM start saved on every run. Brokers made
 * from it share a cluster id, which is harmless for separate single-node clusters.
 */
async function formattedStorage(java: string, libs: string, opts: KafkaOptions): Promise<string> {
  const formatted = join(libs, "..", "formatted");
  if (existsSync(formatted)) return formatted;
  const staging = `${formatted}.${process.pid}.${randomBytes(4).toString("hex")}`;
  const configFile = `${staging}.properties`;
  await writeFile(configFile, serverProperties(opts, staging));
  try {
    await format(java, libs, configFile, [], `${staging}.log`);
    await rename(staging, formatted).catch(async (err: NodeJS.ErrnoException) => {
      if (!existsSync(formatted)) throw err;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(configFile, { force: true });
    await rm(`${staging}.log`, { force: true });
  }
  return formatted;
}

/** Formats the storage that `configFile` names, with the `--add-scram` credentials given. */
async function format(
  java: string,
  libs: string,
  configFile: string,
  scram: string[],
  logFile: string,
): Promise<void> {
  await run(
    "kafka storage format",
    java,
    [
      ...jvmFlags(libs, "256m"),
      "kafka.tools.StorageTool",
      "format",
      "-t",
      clusterId(),
      "-c",
      configFile,
      ...scram.flatMap((credential) => ["--add-scram", credential]),
    ],
    logFile,
  );
}

function checkedUsers(listener: SecureListener): [string, string][] {
  const users = Object.entries(listener.users);
  for (const [name, password] of users) {
    // Neither the JAAS configuration nor --add-scram's syntax would quote anything else.
    if (!/^[\w-]+$/.test(name) || !/^[\w-]+$/.test(password))
      throw new Error(`secureListener: user ${name}: only letters, digits, - and _ in names and passwords`);
  }
  return users;
}

function scramCredentials(listener: SecureListener): string[] {
  return checkedUsers(listener).flatMap(([name, password]) =>
    ["SCRAM-SHA-256", "SCRAM-SHA-512"].map((m) => `${m}=[name=${name},password=${password}]`),
  );
}

function secureListenerProperties(listener: SecureListener): Record<string, string> {
  const prefix = "listener.name.secure";
  const plainUsers = checkedUsers(listener)
    .map(([name, password]) => ` user_${name}="${password}"`)
    .join("");
  return {
    [`${prefix}.ssl.keystore.type`]: "PEM",
    [`${prefix}.ssl.keystore.location`]: listener.keyStoreFile,
    [`${prefix}.sasl.enabled.mechanisms`]: SECURE_LISTENER_MECHANISMS.join(","),
    [`${prefix}.plain.sasl.jaas.config`]: `org.apache.kafka.common.security.plain.PlainLoginModule required${plainUsers};`,
    [`${prefix}.scram-sha-256.sasl.jaas.config`]:
      "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    [`${prefix}.scram-sha-512.sasl.jaas.config`]:
      "org.apache.kafka.common.security.scram.ScramLoginModule required;",
  };
}

function serverProperties(
  opts: Pick<KafkaOptions, "port" | "controllerPort" | "proxiedListeners" | "secureListener">,
  logDir: string,
): string {
  const proxied = opts.proxiedListeners ?? [];
  const secure = opts.secureListener;
  const props: Record<string, string | number> = {
    "process.roles": "broker,controller",
    "node.id": 1,
    // A static single-voter quorum; no need for the dynamic-quorum `--standalone` format.
    // https://kafka.apache.org/documentation/#static_versus_dynamic_kraft_quorums
    "controller.quorum.voters": `1@127.0.0.1:${opts.controllerPort}`,
    "controller.listener.names": "CONTROLLER",
    listeners: [
      `PLAINTEXT://127.0.0.1:${opts.port}`,
      `CONTROLLER://127.0.0.1:${opts.controllerPort}`,
      ...proxied.map((l) => `${l.name}://127.0.0.1:${l.port}`),
      ...(secure ? [`SECURE://127.0.0.1:${secure.port}`] : []),
    ].join(","),
    "advertised.listeners": [
      `PLAINTEXT://127.0.0.1:${opts.port}`,
      ...proxied.map((l) => `${l.name}://127.0.0.1:${l.advertisedPort}`),
      ...(secure ? [`SECURE://127.0.0.1:${secure.port}`] : []),
    ].join(","),
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": [
      "CONTROLLER:PLAINTEXT",
      "PLAINTEXT:PLAINTEXT",
      ...proxied.map((l) => `${l.name}:PLAINTEXT`),
      ...(secure ? ["SECURE:SASL_SSL"] : []),
    ].join(","),
    ...(secure && secureListenerProperties(secure)),
    "log.dirs": logDir,
    "num.partitions": 6,
    ...SINGLE_NODE_SETTINGS,
    // Fewer internal partitions than the default 50: the first group join is much faster.
    "offsets.topic.num.partitions": 10,
    "transaction.state.log.num.partitions": 10,
    "share.coordinator.state.topic.num.partitions": 10,
    // What an idle broker costs (bench/JOURNAL.md, "Idle"). The active controller appends a no-op record to
    // the metadata log every 500 ms by default, so that followers and brokers can tell a quiet log from a
    // lost leader; each one is an append, a flush and a metadata publication. With the only voter and
    // broker in one process there is nobody to tell: every 5 s keeps the liveness metrics moving.
    // https://kafka.apache.org/documentation/#brokerconfigs_metadata.max.idle.interval.ms
    "metadata.max.idle.interval.ms": 5000,
    // Request handlers and network threads each wake every 300 ms to poll their queue or socket, busy or
    // not; the defaults (8, and 3 per listener) are for a broker with cores and disks of its own. On two
    // shared cores these give the same raw producer ceiling and CPU a message (bench/JOURNAL.md).
    "num.io.threads": 2,
    "num.network.threads": 1,
  };
  return `${Object.entries(props)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n")}\n`;
}

function jvmFlags(libs: string, heap: string): string[] {
  return [
    "-Xms128m",
    `-Xmx${heap}`,
    // The serial collector, not the G1 of Kafka's scripts: on two cores shared with everything else, G1's
    // concurrent marking (19 cycles in a quick bench run, the heap growing from 128 MB) and its costlier
    // write barriers cost the broker about a tenth more CPU a saga, and its worst pauses were as long
    // (bench/JOURNAL.md, "Session 40"). A broker with cores of its own is better served by G1.
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    // No hsperfdata file, whose counters a VM thread samples every 50 ms for jstat and jps (jcmd <pid> and
    // jstack <pid> still attach).
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    // An archive made by another JDK build is ignored; no need to say so in the log.
    "-Xlog:cds=off,cds+dynamic=off",
    // slf4j-simple (see the pom): warnings and errors only, with time stamps.
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-cp",
    join(libs, "*"),
  ];
}

function javaCommand(): string {
  const home = process.env.JAVA_HOME;
  return home && existsSync(join(home, "bin", "java")) ? join(home, "bin", "java") : "java";
}

/**
 * A KRaft cluster id: 16 random bytes, base64url without padding, as `kafka-storage random-uuid` prints.
 * Never one that starts with "-" (one in 64 would): `kafka-storage format -t -…` takes it for an option and
 * fails, which failed a CI run's setup. Kafka's own `Uuid.randomUuid()` draws again for the same reason.
 */
export function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString("base64url");
    if (!id.startsWith("-")) return id;
  }
}

/** Runs a short-lived command, supervised like the servers so that it cannot outlive us either. */
async function run(label: string, command: string, args: string[], logFile: string): Promise<void> {
  const job = await supervise({ command, args, logFile, stopSignal: "SIGTERM", graceSeconds: 1 });
  const code = await job.exited;
  if (code !== 0) throw new Error(`${label} failed (code ${code}):\n${await tail(logFile)}`);
}

async function waitUntilReady(
  brokers: string[],
  exited: Promise<number | null>,
  logFile: string,
): Promise<void> {
  let gone: number | null | undefined;
  void exited.then((code) => (gone = code));
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (gone !== undefined)
      throw new Error(`kafka exited with code ${gone} while starting:\n${await tail(logFile)}`);
    // A client per try: one that failed to connect is not reused. The system's default client (kafkajs's
    // request queue sets negative timeouts, which Node 24 warns of).
    const admin = new Admin({
      clientId: "infra-probe",
      bootstrapBrokers: brokers,
      connectTimeout: 1000,
      requestTimeout: 2000,
      retries: 0,
    });
    admin.on("error", () => {});
    try {
      const { brokers: found } = await admin.metadata({ topics: [], forceUpdate: true });
      if (found.size > 0) return;
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`kafka did not answer in 90s:\n${await tail(logFile)}`, { cause: err });
    } finally {
      await admin.close().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
