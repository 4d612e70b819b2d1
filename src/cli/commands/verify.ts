/**
 * `maxwell verify`: walks the whole log and checks the hash chain, every checkpoint signature
 * against the kernel key kept in the data dir, and that nothing was cut after the last
 * checkpoint the kernel saved outside the log. Exits non-zero naming the first bad event.
 */
import { existsSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { ChainVerifier, type VerifyReport } from "../../protocol/mod.js";
import { keyFiles, verifySignature } from "../../transport/identity.js";
import { readJson } from "../../runtime/deployment.js";
import { cliContext, ExitCode, fail, type GlobalOptions } from "../context.js";

export function registerVerify(program: Command, globals: () => GlobalOptions): void {
  program
    .command("verify")
    .description("check the log's hash chain and signed checkpoints; exit 3 naming the first bad event")
    .option("--key <publicKey>", "the kernel's public key (default: <data>/keys/kernel.pub)")
    .option("--json", "print the report as JSON")
    .action(async (opts: { key?: string; json?: boolean }) => {
      let report: VerifyReport;
      try {
        report = await verify(globals(), opts.key);
      } catch (err) {
        fail(err);
      }
      if (opts.json) process.stdout.write(JSON.stringify(report) + "\n");
      else if (report.ok) {
        const unsigned = report.unsigned;
        process.stdout.write(
          `ok: ${report.entries} events, hash chain intact, ${report.checkpoints} signed checkpoints (last covers #${report.checkpointedTo})` +
            (unsigned > 0 ? `; ${unsigned} events after it are chained, not yet signed` : "") +
            `\nhead #${report.lastSeq} ${report.head}\n`,
        );
      } else {
        process.stdout.write(`FAILED at event #${report.problem?.seq}: ${report.problem?.reason}\n`);
      }
      process.exit(report.ok ? 0 : ExitCode.Verify);
    });
}

async function verify(g: { data?: string; nats?: string; creds?: string }, keyFlag?: string): Promise<VerifyReport> {
  const ctx = cliContext(g);
  const pubFile = keyFiles(ctx.layout.keys).kernelPublic;
  const key = keyFlag ?? (existsSync(pubFile) ? readFileSync(pubFile, "utf8").trim() : undefined);
  const anchor = readJson<{ upTo: number; head: string }>(ctx.layout.anchor);
  const source = await ctx.openLog("verify");
  try {
    const lastSeq = await source.lastSeq();
    const verifier = new ChainVerifier(key, verifySignature);
    for await (const entry of source.entries({ from: 1, follow: false })) {
      verifier.add(entry);
      if (verifier.failed) break;
    }
    return verifier.finish(lastSeq, anchor);
  } finally {
    await source.close();
  }
}
