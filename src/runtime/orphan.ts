/**
 * Processes the daemon starts (the kernel, the services, the agents) stop when the daemon is gone.
 * A `maxwell up` killed with SIGKILL (or by the OOM killer) cannot stop its children, and a kernel
 * left running would keep appending to the chain next to the one a restarted daemon starts: two
 * kernels on one chain is what the design rules out. The daemon names itself to each child in
 * MAXWELL_SUPERVISOR_PID; a child that finds a different parent stops itself, as on SIGTERM.
 * A process started by hand (no variable) is left alone: under nohup or systemd it outlives its
 * shell on purpose.
 */

/** The variable the daemon sets on each process it starts: its own pid. */
export const SUPERVISOR_PID_ENV = "MAXWELL_SUPERVISOR_PID";

/** Whether a process with this pid exists (one of another user's counts too). */
export function isProcessAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** How often a child looks at its parent. */
const CHECK_MS = 1000;

/**
 * When this process was started by the daemon, stops it once its parent is no longer that daemon
 * (already, or later): `stop` runs, by default a SIGTERM to itself so its usual shutdown runs.
 * Install it before anything slow, so a daemon that dies while this process starts is noticed.
 * Returns whether it is watching.
 */
export function stopWhenOrphaned(what: string, stop: () => void = () => process.kill(process.pid, "SIGTERM")): boolean {
  const supervisor = Number(process.env[SUPERVISOR_PID_ENV]);
  if (!Number.isInteger(supervisor) || supervisor <= 0) return false;
  // A direct child sees its parent change (immune to pid reuse); one started through a wrapper
  // (an agent command like `sh -c ...`) asks whether the daemon's pid still lives.
  const direct = process.ppid === supervisor;
  const check = (): boolean => {
    if (direct ? process.ppid === supervisor : isProcessAlive(supervisor)) return false;
    clearInterval(timer);
    process.stderr.write(`${what}: the daemon that started it (pid ${supervisor}) is gone; stopping\n`);
    stop();
    return true;
  };
  const timer = setInterval(check, CHECK_MS);
  timer.unref();
  check();
  return true;
}
