import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdir } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { cacheDir } from "../src/paths.ts";
import { configForTargets, hasPrometheus, startPrometheus } from "../src/prometheus.ts";

// A Prometheus orphaned by a killed `npm start` keeps :9090; the next start's Prometheus died on the taken
// port while the orphan answered the readiness probe, and the start went on with a stranger.
it("refuses a port where something already answers /-/ready", async () => {
  const stranger = createServer((_req, res) => res.end("Prometheus Server is Ready.\n"));
  stranger.listen(0, "127.0.0.1");
  await once(stranger, "listening");
  const { port } = stranger.address() as AddressInfo;
  try {
    const started = startPrometheus({ config: configForTargets({}), port });
    // Stopped again if it was wrongly taken for ready.
    void started.then((p) => p.stop()).catch(() => {});
    await expect(started).rejects.toThrow(`port ${port} is taken`);
  } finally {
    stranger.close();
  }
});

// The watchdog that runs PostgreSQL and Kafka stops it with the process that started it, however that ends.
it.skipIf(!hasPrometheus())(
  "stops when the process that started it is killed (SIGKILL), and its data goes at the next start",
  async () => {
    const starter = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { configForTargets, startPrometheus } = await import(${JSON.stringify(fileURLToPath(new URL("../src/prometheus.ts", import.meta.url)))});
       const prometheus = await startPrometheus({ config: configForTargets({}) });
       console.log(prometheus.url);
       setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      const [url] = (await once(createInterface({ input: starter.stdout as Readable }), "line")) as [string];
      expect((await fetch(`${url}/-/ready`)).ok).toBe(true);
      starter.kill("SIGKILL");
      await expect
        .poll(
          () =>
            fetch(`${url}/-/ready`).then(
              () => "answers",
              () => "gone",
            ),
          { timeout: 10_000 },
        )
        .toBe("gone");
      // Its data directory was left behind, for the next start to delete.
      await (await startPrometheus({ config: configForTargets({}) })).stop();
      const runs = await readdir(join(cacheDir, "prometheus"));
      expect(runs.filter((run) => run.startsWith(`run-${starter.pid}-`))).toEqual([]);
    } finally {
      starter.kill("SIGKILL");
    }
  },
);
