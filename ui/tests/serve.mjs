// A real `pgharness serve` (embedded PostgreSQL 16) on a free loopback port, in a throwaway
// data directory, for the tests in this folder.
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.PGHARNESS_BIN ?? join(here, "../../target/debug/pgharness");

/** Starts it and waits until it is ready; `stop()` stops it and removes its data. */
export async function startServe() {
  const dataDir = mkdtempSync(join(tmpdir(), "pgharness-ui-"));
  // As root, PostgreSQL runs as an unprivileged account that must pass through this directory.
  chmodSync(dataDir, 0o711);
  const server = spawn(binary, ["serve", "--host", "127.0.0.1", "--port", "0"], {
    cwd: dataDir,
    env: { ...process.env, RUST_LOG: "warn", DATABASE_URL: "", PGHARNESS_DATA_DIR: join(dataDir, "data"), PGHARNESS_LOG_DIR: "off",
      PGHARNESS_FIXTURES_DIR: join(here, "../../fixtures") },
    stdio: ["ignore", "pipe", "inherit"],
  });
  // The printed link carries the admin token: http://127.0.0.1:<port>/?token=…
  const link = await new Promise((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`pgharness serve exited with ${code}`)));
    const lines = createInterface({ input: server.stdout });
    lines.on("line", (line) => {
      const found = line.match(/^API and UI at (http:\/\/\S+)\s/);
      if (found) resolve(new URL(found[1]));
    });
  });
  const stop = async () => {
    if (server.exitCode === null) {
      const exited = new Promise((resolve) => server.once("exit", resolve));
      server.kill("SIGTERM");
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { base: link.origin, adminToken: link.searchParams.get("token"), stop };
}
