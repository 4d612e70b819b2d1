/**
 * Demo coordinator: receives a task from a principal, splits its items between two workers with
 * requests through the kernel, and gathers their answers.
 */
import { defineAgent, main } from "../../src/sdk/mod.js";

interface Task {
  task: string;
  items: string[];
}

const coordinator = defineAgent({
  name: "coordinator",
  async onMessage(msg, ctx) {
    const task = msg.body as Task;
    const items = Array.isArray(task?.items) ? task.items : [];
    const half = Math.ceil(items.length / 2);
    const started = ctx.now();
    const [a, b] = await Promise.all([
      ctx.request<{ worker: string; result: string[] }>("worker-1", { items: items.slice(0, half) }, { timeoutMs: 10_000 }),
      ctx.request<{ worker: string; result: string[] }>("worker-2", { items: items.slice(half) }, { timeoutMs: 10_000 }),
    ]);
    const result = [...a.result, ...b.result];
    ctx.log.info({ task: task?.task, principal: msg.principal, result, ms: ctx.now() - started }, "task done");
    return result;
  },
});

export default coordinator;
await main(coordinator);
