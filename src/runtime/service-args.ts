/**
 * The command line every service daemon shares: `--nats URL` (or MAXWELL_NATS_URL), `--data DIR`,
 * `--creds FILE`, `--help`, plus a service's own string options. Usage errors print the help and
 * exit 2; `--help` prints it and exits 0.
 */
import { parseArgs } from "node:util";

export interface ServiceArgs<K extends string> {
  servers: string;
  data: string | undefined;
  creds: string | undefined;
  /** The service's own options, as given. */
  extra: Partial<Record<K, string>>;
}

export function serviceArgs<K extends string = never>(program: string, help: string, extra: readonly K[] = []): ServiceArgs<K> {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    nats: { type: "string" },
    data: { type: "string" },
    creds: { type: "string" },
    help: { type: "boolean", short: "h" },
  };
  for (const name of extra) options[name] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ options }) as { values: Record<string, string | boolean | undefined> });
  } catch (err) {
    process.stderr.write(`${program}: ${(err as Error).message}\n${help}\n`);
    process.exit(2);
  }
  if (values["help"]) {
    process.stdout.write(help + "\n");
    process.exit(0);
  }
  const servers = (values["nats"] as string | undefined) ?? process.env["MAXWELL_NATS_URL"];
  if (!servers) {
    process.stderr.write(`${program}: --nats URL is required\n${help}\n`);
    process.exit(2);
  }
  const given: Partial<Record<K, string>> = {};
  for (const name of extra) if (typeof values[name] === "string") given[name] = values[name];
  return { servers, data: values["data"] as string | undefined, creds: values["creds"] as string | undefined, extra: given };
}
