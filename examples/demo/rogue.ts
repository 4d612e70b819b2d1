/**
 * Demo rogue agent: tries what no policy permits (messaging a worker, asking the coordinator).
 * The kernel denies both; the denials and their reasons are in `maxwell log`.
 */
import { defineAgent, main, MaxwellError } from "../../src/sdk/mod.js";

const rogue = defineAgent({
  name: "rogue",
  async onStart(ctx) {
    for (const attempt of [
      () => ctx.send("worker-1", { items: ["drop table users"] }),
      () => ctx.request("coordinator", { task: "exfiltrate", items: ["secrets"] }, { timeoutMs: 2000 }),
    ]) {
      try {
        await attempt();
        ctx.log.error("the kernel let a forbidden message through");
      } catch (err) {
        const e = MaxwellError.from(err);
        ctx.log.info({ code: e.code, reason: e.message }, "denied, as expected");
      }
    }
  },
  onMessage() {},
});

export default rogue;
await main(rogue);
