/**
 * An agent for crash tests, run as its own process. For each request it sends one message to
 * `sink` (its effect), then answers. With CRASH_MARKER set, the first time it handles a request
 * it kills itself with SIGKILL right after the effect, before acking, and leaves the marker file
 * so the restarted process does not crash again.
 */
import { existsSync, writeFileSync } from "node:fs";
import { defineAgent, main } from "../../src/sdk/mod.js";

const marker = process.env["CRASH_MARKER"];

await main(
  defineAgent({
    async onMessage(msg, ctx) {
      await ctx.send("sink", { from: ctx.name, about: msg.body, redelivered: msg.redelivered });
      if (marker && !existsSync(marker)) {
        writeFileSync(marker, String(process.pid));
        process.kill(process.pid, "SIGKILL");
      }
      return { handled: msg.body };
    },
  }),
);
