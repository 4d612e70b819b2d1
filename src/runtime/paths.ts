/**
 * Where things are: the package root (for schemas and built service entry points) and the
 * layout of a data directory. Works from the TypeScript sources (tests) and from dist/.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "schemas"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the Maxwell package root (package.json next to schemas/)");
    dir = up;
  }
}

/** The package root: the folder holding package.json and schemas/. */
export const packageRoot = findRoot();

export function schemaPath(file: string): string {
  return join(packageRoot, "schemas", file);
}

/** The built entry point of a service (`dist/services/<name>/main.js`). */
export function serviceEntry(name: string): string {
  return join(packageRoot, "dist", "services", name, "main.js");
}

/** The built CLI. */
export function cliEntry(): string {
  return join(packageRoot, "dist", "src", "cli", "main.js");
}

/** Default data directory: --data, else MAXWELL_HOME, else ./.maxwell. */
export function resolveDataDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag ?? env["MAXWELL_HOME"] ?? ".maxwell");
}

/** The layout of a data directory. */
export function dataLayout(dataDir: string) {
  return {
    root: dataDir,
    keys: join(dataDir, "keys"),
    creds: join(dataDir, "creds"),
    credsOf: (name: string) => join(dataDir, "creds", `${name}.creds`),
    nats: join(dataDir, "nats"),
    natsConfig: join(dataDir, "nats", "nats.conf"),
    natsStore: join(dataDir, "nats", "store"),
    policies: join(dataDir, "policies.cedar"),
    config: join(dataDir, "maxwell.json"),
    kernelDir: join(dataDir, "kernel"),
    anchor: join(dataDir, "kernel", "checkpoint.json"),
    kernelSnapshots: join(dataDir, "kernel", "snapshots"),
    /** Revoked credentials (killed agents), kept so a restarted server starts with them. */
    revocations: join(dataDir, "kernel", "revocations.json"),
    /** The log index (src/runtime/log-index.ts): a disposable projection, rebuilt when removed. */
    index: join(dataDir, "index"),
    run: join(dataDir, "run"),
    daemon: join(dataDir, "run", "daemon.json"),
    logs: join(dataDir, "logs"),
  };
}
export type DataLayout = ReturnType<typeof dataLayout>;
