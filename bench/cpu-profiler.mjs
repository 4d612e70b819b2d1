/**
 * Preload for profiling a service the benchmark spawns: `NODE_OPTIONS=--import <this file>`
 * with MAXWELL_BENCH_PROFILE_OUT=<file>. (`--cpu-prof` itself is refused in NODE_OPTIONS, and
 * spawnService takes no node flags.) Starts the V8 CPU profiler in the process and writes a
 * .cpuprofile (open in Chrome DevTools or speedscope) when the process exits.
 */
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";

const out = process.env.MAXWELL_BENCH_PROFILE_OUT;
if (out) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 200 });
  session.post("Profiler.start");
  // An in-thread inspector session answers synchronously, so this works in an exit handler.
  process.on("exit", () => {
    session.post("Profiler.stop", (err, result) => {
      if (!err) writeFileSync(out, JSON.stringify(result.profile));
    });
  });
}
