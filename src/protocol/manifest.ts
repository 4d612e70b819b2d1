/**
 * Tool manifests: their canonical form, the hash the kernel pins at registration, validation of a
 * manifest someone hands in, and validation of a call's arguments against the manifest's input
 * schema. The kernel and the tool services use the same functions, so "the manifest changed" means
 * the same thing on both sides of the wire.
 *
 * @example
 * ```ts
 * const manifest = validateManifest(JSON.parse(text));   // bad_request naming what is wrong
 * const pinned = manifestHash(manifest);                  // hex sha256 of canonicalJson(manifest)
 * const check = compileArgsValidator(manifest);
 * check({ path: 42 });                  // bad_request: tool 'file-read' args field 'path' must be string
 * ```
 */
import { createHash } from "node:crypto";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { ErrorCode, MaxwellError } from "./errors.js";
import { ToolEffect, type ToolManifest } from "./services.js";
import { isName } from "./subjects.js";

/**
 * JSON with object keys sorted (by UTF-16 code unit, as `Array.prototype.sort` does) and no
 * whitespace; for the values a manifest holds this is RFC 8785 (JCS). Throws `bad_request` for
 * anything that is not plain JSON data: non-finite numbers, bigints, functions, class instances,
 * cycles. `undefined` object members are left out, as `JSON.stringify` does.
 */
export function canonicalJson(value: unknown): string {
  return write(value, new Set(), "$");
}

function write(value: unknown, open: Set<object>, at: string): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw notJson(at, `the number ${String(value)}`);
    return JSON.stringify(value);
  }
  if (typeof value !== "object") throw notJson(at, `a ${typeof value}`);
  if (open.has(value)) throw notJson(at, "a cycle");
  open.add(value);
  try {
    if (Array.isArray(value)) {
      return `[${value.map((item, i) => (item === undefined ? "null" : write(item, open, `${at}[${i}]`))).join(",")}]`;
    }
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) throw notJson(at, "an object that is not a plain object");
    const record = value as Record<string, unknown>;
    const members: string[] = [];
    for (const key of Object.keys(record).sort()) {
      const member = record[key];
      if (member === undefined) continue;
      members.push(`${JSON.stringify(key)}:${write(member, open, `${at}.${key}`)}`);
    }
    return `{${members.join(",")}}`;
  } finally {
    open.delete(value);
  }
}

function notJson(at: string, what: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, `value at ${at} is not JSON data: ${what}`);
}

/** The pinned identity of a manifest: hex sha256 of {@link canonicalJson} of it. */
export function manifestHash(m: ToolManifest): string {
  return createHash("sha256").update(canonicalJson(m), "utf8").digest("hex");
}

/** Tool names: identity-style, so they can appear in subjects and policies. */
const TOOL_NAME = /^[a-z][a-z0-9_-]{0,63}$/;
/** Local names of injected secrets: what the tool's code reads from `ctx.secrets`. */
const SECRET_LOCAL_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const MAX_DESCRIPTION = 4096;
const MAX_VERSION = 64;

const MANIFEST_FIELDS: ReadonlySet<string> = new Set(["name", "version", "description", "input", "output", "effect", "service", "idempotent", "secrets"]);
const effects: ReadonlySet<string> = new Set(Object.values(ToolEffect));

function refuse(message: string, detail?: Record<string, unknown>): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message, detail ? { detail } : undefined);
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/**
 * Checks that `x` is a well-formed {@link ToolManifest} and returns it as one (a copy holding only
 * the manifest's fields). Throws `bad_request` saying what is wrong: a name outside
 * `^[a-z][a-z0-9_-]{0,63}$`, an effect outside {@link ToolEffect}, an `input` that is not an
 * object JSON Schema ajv compiles, an unknown field (a manifest is closed, so everything that
 * could change what a tool does is inside the pinned hash).
 */
export function validateManifest(x: unknown): ToolManifest {
  if (!isPlainObject(x)) throw refuse("tool manifest must be a JSON object");
  for (const key of Object.keys(x)) {
    if (!MANIFEST_FIELDS.has(key)) throw refuse(`tool manifest has an unknown field '${key}' (allowed: ${[...MANIFEST_FIELDS].join(", ")})`);
  }
  const { name, version, description, input, output, effect, service, idempotent, secrets } = x;
  if (typeof name !== "string" || !TOOL_NAME.test(name)) {
    throw refuse(`tool manifest 'name' ${JSON.stringify(name) ?? "undefined"} is invalid: use 1-64 characters from a-z, 0-9, '-', '_', starting with a letter`);
  }
  const what = `tool '${name}' manifest`;
  if (typeof version !== "string" || version.length === 0 || version.length > MAX_VERSION) {
    throw refuse(`${what}: 'version' must be a non-empty string of at most ${MAX_VERSION} characters`);
  }
  if (typeof description !== "string" || description.length > MAX_DESCRIPTION) {
    throw refuse(`${what}: 'description' must be a string of at most ${MAX_DESCRIPTION} characters`);
  }
  if (typeof effect !== "string" || !effects.has(effect)) {
    throw refuse(`${what}: 'effect' must be one of ${[...effects].join(", ")}, not ${JSON.stringify(effect) ?? "undefined"}`);
  }
  checkSchema(input, `${what}: 'input'`, true);
  if (output !== undefined) checkSchema(output, `${what}: 'output'`, false);
  if (service !== undefined && !isName(service)) {
    throw refuse(`${what}: 'service' must be a service name (a-z, 0-9, '-', '_', starting with a letter)`);
  }
  if (idempotent !== undefined && typeof idempotent !== "boolean") throw refuse(`${what}: 'idempotent' must be a boolean`);
  if (secrets !== undefined) {
    if (!isPlainObject(secrets)) throw refuse(`${what}: 'secrets' must be an object mapping local names to secret names`);
    for (const [local, ref] of Object.entries(secrets)) {
      if (!SECRET_LOCAL_NAME.test(local)) throw refuse(`${what}: secret local name '${local}' must match ${SECRET_LOCAL_NAME.source}`);
      if (!isName(ref)) throw refuse(`${what}: secret '${local}' must name a secret (a-z, 0-9, '-', '_', starting with a letter), not ${JSON.stringify(ref)}`);
    }
  }
  // Key order does not matter to the hash; only the fields that are present are copied.
  const manifest: ToolManifest = { name, version, description, input: input as Record<string, unknown>, effect: effect as ToolEffect };
  if (output !== undefined) manifest.output = output as Record<string, unknown>;
  if (service !== undefined) manifest.service = service as string;
  if (idempotent !== undefined) manifest.idempotent = idempotent;
  if (secrets !== undefined) manifest.secrets = { ...(secrets as Record<string, string>) };
  // Throws on anything that is not plain JSON (a function or a cycle inside a schema).
  canonicalJson(manifest);
  return manifest;
}

function checkSchema(schema: unknown, what: string, mustBeObject: boolean): void {
  if (!isPlainObject(schema)) throw refuse(`${what} must be a JSON Schema object`);
  if (mustBeObject && schema["type"] !== "object") throw refuse(`${what} must be a JSON Schema with "type": "object" (arguments are always an object)`);
  try {
    compileSchema(schema);
  } catch (err) {
    if (err instanceof MaxwellError) throw err;
    throw new MaxwellError(ErrorCode.BadRequest, `${what} is not a JSON Schema ajv can compile: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * One Ajv instance per schema: tool schemas come from different authors, and two of them using the
 * same `$id` must not collide or reference each other. `$schema` is dropped before compiling so a
 * schema that names draft 2020-12 (as MCP servers often do) is read with the default dialect
 * rather than refused for a meta-schema Ajv was not given.
 */
function compileSchema(schema: Record<string, unknown>): ValidateFunction {
  const { $schema: _dialect, ...rest } = schema;
  const ajv = new Ajv({ allErrors: false, strict: false });
  return ajv.compile(rest);
}

/** Validates a call's arguments (or a tool's result); throws `bad_request` naming the failing path. */
export type ArgsValidator = (value: unknown) => void;

const compiled = new Map<string, ArgsValidator>();
/** Compiled validators kept by manifest hash; tools are few, and a re-pinned one gets a new entry. */
const MAX_COMPILED = 1024;

function cachedValidator(key: string, build: () => ArgsValidator): ArgsValidator {
  const cached = compiled.get(key);
  if (cached) return cached;
  const check = build();
  if (compiled.size >= MAX_COMPILED) compiled.clear();
  compiled.set(key, check);
  return check;
}

/**
 * A validator for calls to the tool `m` describes. It throws a `bad_request` MaxwellError whose
 * message names the tool and the failing field (`tool 'file-read' args field 'path' must be
 * string`) and whose `detail` holds the path and ajv's report. Validators are cached by manifest
 * hash.
 */
export function compileArgsValidator(m: ToolManifest): ArgsValidator {
  return cachedValidator(`${manifestHash(m)}:input`, () => {
    const validate = compileSchema(m.input);
    return (args) => {
      if (!validate(args)) throw explain(m.name, "args", validate.errors ?? []);
    };
  });
}

/**
 * A validator for the results of the tool `m` describes, checked against its `output` schema
 * (`undefined` when the manifest promises no shape). Throws like {@link compileArgsValidator},
 * naming `result` instead of `args`.
 */
export function compileResultValidator(m: ToolManifest): ArgsValidator | undefined {
  const output = m.output;
  if (output === undefined) return undefined;
  return cachedValidator(`${manifestHash(m)}:output`, () => {
    const validate = compileSchema(output);
    return (result) => {
      if (!validate(result)) throw explain(m.name, "result", validate.errors ?? []);
    };
  });
}

/** The dotted path of the first error (`items.0.name`), including the missing or extra member. */
function failingPath(error: ErrorObject): string {
  const parts = error.instancePath.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  const params = error.params as { missingProperty?: unknown; additionalProperty?: unknown };
  if (error.keyword === "required" && typeof params.missingProperty === "string") parts.push(params.missingProperty);
  if (error.keyword === "additionalProperties" && typeof params.additionalProperty === "string") parts.push(params.additionalProperty);
  return parts.join(".");
}

function explain(tool: string, what: "args" | "result", errors: ErrorObject[]): MaxwellError {
  const first = errors[0];
  if (!first) return refuse(`tool '${tool}' ${what} are invalid`);
  const path = failingPath(first);
  let why = first.message ?? "is invalid";
  if (first.keyword === "required") why = "is required";
  if (first.keyword === "additionalProperties") why = what === "args" ? "is not an argument this tool takes" : "is not a field the output schema allows";
  const where = path ? `${what} field '${path}'` : what;
  return refuse(`tool '${tool}' ${where} ${why}`, { path, errors });
}
