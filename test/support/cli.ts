/** Runs the built `maxwell` CLI as a user would, and collects its exit code and output. */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { cliEntry } from "../../src/runtime/paths.js";

const run = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `node dist/src/cli/main.js ...args`, with the CLI's own logs kept to warnings. */
export async function runCli(args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cliEntry(), ...args], { env: { ...process.env, MAXWELL_LOG_LEVEL: "warn" } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}
