#!/usr/bin/env node
/**
 * The `maxwell` command: run the daemon, register identities, inject work, read and verify the
 * log. Every command has --help; every failure prints one line and exits non-zero.
 */
import { Command, CommanderError } from "commander";
import { registerAudit } from "./commands/audit.js";
import { registerControl } from "./commands/control.js";
import { registerGovernance } from "./commands/governance.js";
import { registerIdentity } from "./commands/identity.js";
import { registerInit } from "./commands/init.js";
import { registerLog } from "./commands/log.js";
import { registerPolicy } from "./commands/policy.js";
import { registerReplay } from "./commands/replay.js";
import { registerMemoryCommand } from "./commands/memory.js";
import { registerReplayFork } from "./commands/replay-fork.js";
import { registerReplayState } from "./commands/replay-state.js";
import { registerSend } from "./commands/send.js";
import { registerStatus } from "./commands/status.js";
import { registerUp } from "./commands/up.js";
import { registerVerify } from "./commands/verify.js";
import { ExitCode, type GlobalOptions } from "./context.js";

const program = new Command();
program
  .name("maxwell")
  .description("Maxwell: an agent kernel. Every message between agents passes a policy decision and lands in a hash-chained log.")
  .version("0.1.0")
  .option("--data <dir>", "data directory (default: $MAXWELL_HOME or ./.maxwell)")
  .option("--nats <url>", "NATS server URL (default: the running daemon's)")
  .option("--creds <file>", "NATS creds file (default: <data>/creds/admin.creds)")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

const globals = (): GlobalOptions => program.opts<GlobalOptions>();
registerUp(program, globals);
registerStatus(program, globals);
registerIdentity(program, globals, "agent");
registerIdentity(program, globals, "principal");
registerSend(program, globals);
registerLog(program, globals);
registerVerify(program, globals);
registerAudit(program, globals);
registerPolicy(program, globals);
const replay = registerReplay(program, globals);
registerReplayState(replay, globals);
registerReplayFork(replay, globals);
registerMemoryCommand(program, globals);
registerControl(program, globals);
registerGovernance(program, globals);
registerInit(program, globals);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : ExitCode.Usage);
  }
  throw err;
}
