/**
 * `maxwell verify`: walks the whole log and checks the hash chain, every checkpoint signature
 * against the kernel key kept in the data dir, and that nothing was cut after the last
 * checkpoint the kernel saved outside the log. Exits non-zero naming the first bad event.
 * `maxwell verify --bundle FILE` checks an exported bundle offline, with no server.
 */
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { ChainVerifier, ErrorCode, MaxwellError, type VerifyReport } from "../../protocol/mod.js";
import { keyFiles, verifySignature } from "../../transport/identity.js";
import { BundleVerifier, type BundleReport } from "../../runtime/bundle.js";
import { readJson } from "../../runtime/deployment.js";
import { cliContext, ExitCode, fail, type GlobalOptions } from "../context.js";

export function registerVerify(program: Command, globals: () => GlobalOptions): void {
  program
    .command("verify")
    .description("check the log's hash chain and signed checkpoints; exit 3 naming the first bad event")
    .option("--key <publicKey>", "the kernel's public key (default: <data>/keys/kernel.pub; for --bundle, the key the bundle names)")
    .option("--bundle <file>", "check a bundle from 'maxwell log export' offline instead of the live log")
    .option("--json", "print the report as JSON")
    .action(async (opts: { key?: string; bundle?: string; json?: boolean }) => {
      if (opts.bundle !== undefined) {
        let report: BundleReport;
        try {
          report = await verifyBundle(opts.bundle, opts.key);
        } catch (err) {
          fail(err);
        }
        if (opts.json) process.stdout.write(JSON.stringify(report) + "\n");
        else if (report.ok) {
          process.stdout.write(
            `ok: bundle #${report.from}..#${report.to}, hash chain intact from ${report.anchor ? `the anchor ${report.anchor.hash.slice(0, 12)}… (hash of #${report.anchor.seq})` : "the start of the log"}, ` +
              `${report.checkpoints} signed checkpoints, the last covering #${report.checkpointedTo}${report.sealEntries > 0 ? ` (${report.sealEntries} entries after #${report.to} link the range to it)` : ""}\n` +
              `signed by ${report.kernelKey}${report.keyPinned ? " (the key given with --key)" : " (the key the bundle names: compare it with the kernel's, or pin it with --key)"}\n`,
          );
        } else {
          process.stdout.write(`FAILED at event #${report.problem?.seq}: ${report.problem?.reason}\n`);
        }
        process.exit(report.ok ? 0 : ExitCode.Verify);
      }
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

async function verifyBundle(file: string, key?: string): Promise<BundleReport> {
  if (!existsSync(file)) throw new MaxwellError(ErrorCode.NotFound, `bundle ${file} not found`);
  const verifier = new BundleVerifier(verifySignature, key);
  const lines = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Infinity });
  for await (const line of lines) {
    verifier.addLine(line);
    if (verifier.failed) break;
  }
  lines.close();
  return verifier.finish();
}
