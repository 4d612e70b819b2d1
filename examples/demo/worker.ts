/**
 * Demo worker: answers a request by upper-casing the items it was given. Its name comes from
 * MAXWELL_AGENT, so one script runs as worker-1 and worker-2.
 */
import { defineAgent, main } from "../../src/sdk/mod.js";

const worker = defineAgent({
  async onMessage(msg, ctx) {
    const items = (msg.body as { items?: unknown[] })?.items ?? [];
    return { worker: ctx.name, result: items.map((item) => String(item).toUpperCase()) };
  },
});

export default worker;
await main(worker);
