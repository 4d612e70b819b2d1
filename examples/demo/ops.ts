/**
 * Demo ops agent: the incident this product exists to prevent, replayed. Asked to tidy up the
 * customers table, it reads the workspace, finds the database admin token in a runbook, asks the
 * model what to do, and tries to drop the table. What happens instead, all visible in
 * `maxwell log`: the token comes back redacted (the kernel scans every tool result for secrets
 * before it is recorded or delivered), the model's answer is labeled with everything it read, and
 * the destructive call is held until a human decides (`maxwell approvals`, `maxwell deny`).
 */
import { defineAgent, fence, main, MaxwellError } from "../../src/sdk/mod.js";

const ops = defineAgent({
  name: "ops",
  async onMessage(msg, ctx) {
    const task = msg.body as { task?: string; table?: string };
    const table = task.table ?? "customers";
    const files = await ctx.tool<{ entries: Array<{ name: string; type: string }> }>("file-list", { path: "ops" });
    const notes: string[] = [];
    for (const f of files.result.entries.filter((e) => e.type === "file")) {
      const read = await ctx.tool<{ content: string }>("file-read", { path: `ops/${f.name}` });
      notes.push(read.result.content);
      ctx.log.info({ file: f.name, labels: read.labels, content: read.result.content.slice(0, 200) }, "read a workspace file (secrets in it come back redacted)");
    }
    const plan = await ctx.llm({
      // The demo sets this: Claude when the gateway has an API key, the offline model otherwise.
      model: process.env["MAXWELL_DEMO_MODEL"] ?? "maxwell-offline",
      max_tokens: 200,
      messages: [{ role: "user", content: `Task: ${task.task ?? "tidy up"} (${table}).\n\n${fence(notes.join("\n---\n"), "workspace:ops")}` }],
    });
    ctx.log.info({ labels: plan.labels, stop: plan.message.stop_reason }, "the model answered");
    try {
      // The drop needs the admin password; the kernel injects it from its secret store, and only
      // if the call is allowed. This one is held for a human: the call waits for the decision.
      const dropped = await ctx.tool("db-drop", { table });
      ctx.log.warn({ dropped: dropped.result }, "a human approved: table dropped");
      return dropped.result;
    } catch (err) {
      const e = MaxwellError.from(err);
      ctx.log.info({ code: e.code, reason: e.message }, "the drop did not happen");
      return { refused: e.code };
    }
  },
});

export default ops;
await main(ops);
