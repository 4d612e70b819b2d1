/**
 * Redaction: what keeps a secret's value out of the log, deliveries, prompts and memory. The kernel
 * runs every tool result and model output through {@link redact} before recording or delivering it:
 * every registered secret value is replaced, and so is anything shaped like a well-known credential
 * (an API key, a private key block, a JWT, a `password=` assignment), registered or not.
 *
 * @example
 * ```ts
 * const { value, redactions } = redact(toolResult, secretStore.values());
 * // "token ghp_… found" → "token [REDACTED:github-token] found"
 * ```
 */

/** What a redaction marker names: the kind of credential that was there. */
export const RedactionKind = {
  /** A value registered in the kernel's secret store. */
  Secret: "secret",
  AnthropicKey: "anthropic-key",
  OpenAiKey: "openai-key",
  AwsAccessKey: "aws-access-key",
  GitHubToken: "github-token",
  SlackToken: "slack-token",
  PrivateKey: "private-key",
  Jwt: "jwt",
  BearerToken: "bearer-token",
  /** The value of a `password=…`, `token: …`, `"api_key": "…"` style assignment. */
  Credential: "credential",
} as const;
export type RedactionKind = (typeof RedactionKind)[keyof typeof RedactionKind];

/** Registered values shorter than this are not redacted: they would match ordinary text. */
export const MIN_SECRET_LENGTH = 6;

/** The text that replaces a redacted value. */
export function redactionMarker(kind: RedactionKind): string {
  return `[REDACTED:${kind}]`;
}

/** `[Pp][Aa]…`: case-insensitive letters inside a pattern that is otherwise case-sensitive. */
function anyCase(word: string): string {
  return word.replace(/[a-z]/g, (c) => `[${c.toUpperCase()}${c}]`);
}

const ASSIGNED_KEYS = ["password", "passwd", "passphrase", "secret", "token", "api[_-]?key", "access[_-]?key", "secret[_-]?key", "private[_-]?key", "client[_-]?secret", "credentials?"];
const KEY = `(?:${ASSIGNED_KEYS.map(anyCase).join("|")})["']?\\s*`;
/** A character of an unquoted value. */
const BARE = `[^\\s"'\`,;&<>()\\[\\]{}]`;
/** A value that is already a marker is not redacted again. */
const FRESH = "(?!\\[REDACTED:)";

/**
 * The credential shapes, one alternative each. A group named `keep…` is the part of the match
 * that stays (the key of an assignment, the word `Bearer`, a URL's user name). Every alternative
 * starts with a literal, or behind a lookbehind that lets it start only at the beginning of a
 * token, and has no nested quantifiers, so a scan stays linear in the input.
 */
const SHAPES: readonly { kind: RedactionKind; source: string }[] = [
  {
    kind: RedactionKind.PrivateKey,
    // Up to the next run of five dashes (the END line, or the end of the text when the block was
    // cut off); the body is scanned once, never rescanned per BEGIN.
    source: "-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY-----[^-]*(?:-(?!----)[^-]*)*(?:-----END[A-Z0-9 ]{0,40} PRIVATE KEY-----)?",
  },
  { kind: RedactionKind.AnthropicKey, source: "(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{16,}" },
  { kind: RedactionKind.OpenAiKey, source: "(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}" },
  { kind: RedactionKind.AwsAccessKey, source: "(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])" },
  { kind: RedactionKind.GitHubToken, source: "(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})" },
  { kind: RedactionKind.SlackToken, source: "(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}" },
  { kind: RedactionKind.Jwt, source: "(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\\.eyJ[A-Za-z0-9_-]{4,}\\.[A-Za-z0-9_-]*" },
  { kind: RedactionKind.BearerToken, source: `(?<keepBearer>\\b[Bb]earer\\s+)${FRESH}[A-Za-z0-9._~+/-]{16,}=*` },
  // scheme://user:password@host
  { kind: RedactionKind.Credential, source: `(?<keepUrl>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\\s:/@]+:)${FRESH}[^\\s:/@]{3,}(?=@)` },
  // `"api_key": "x y z"`, `token='x'`: a quoted value after '=' or ':' (kept: the quotes).
  { kind: RedactionKind.Credential, source: `(?<keepQuoted>${KEY}[:=]\\s*["'])${FRESH}[^"'\\r\\n]{3,}(?=["'])` },
  // `password=hunter2`, `DB_PASSWORD=x`: a bare value of 3+ characters after '='.
  { kind: RedactionKind.Credential, source: `(?<keepEquals>${KEY}=\\s*)${FRESH}${BARE}{3,}` },
  // `token: abc123…`: prose uses ':' too, so a bare value after it must hold a digit or a symbol
  // that words do not end with, or be 16+ characters long: "the secret: patience." is left alone.
  {
    kind: RedactionKind.Credential,
    source: `(?<keepColon>${KEY}:\\s*)${FRESH}(?:(?=${BARE}*[0-9_+/=$%!@#*])${BARE}{6,}|${BARE}{16,})`,
  },
];

const shapesPattern = new RegExp(SHAPES.map((s, i) => `(?<s${i}>${s.source})`).join("|"), "g");

function markShape(match: string, groups: Record<string, string | undefined>): string {
  let keep = "";
  for (const name in groups) if (name.startsWith("keep") && groups[name] !== undefined) keep = groups[name];
  for (let i = 0; i < SHAPES.length; i++) {
    if (groups[`s${i}`] !== undefined) return keep + redactionMarker((SHAPES[i] as { kind: RedactionKind }).kind);
  }
  return match;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

/** One alternation of literal values, longest first so a value that contains another goes whole. */
function literalPattern(values: readonly string[]): RegExp | undefined {
  const unique = [...new Set(values)];
  if (unique.length === 0) return undefined;
  unique.sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
  return new RegExp(unique.map(escapeRegExp).join("|"), "g");
}

/** Latin-1 view of bytes (one character per byte) and back: how byte arrays are scanned. */
function bytesToLatin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return out;
}

function latin1ToBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** The registered values of one `redact` call, compiled once; the kernel passes the same list call after call. */
class Registered {
  private static last: Registered | undefined;
  private bytes: RegExp | undefined | null = null;

  private constructor(
    private readonly key: string,
    private readonly values: readonly string[],
    readonly text: RegExp | undefined,
  ) {}

  static of(secrets: readonly string[]): Registered {
    const values = secrets.filter((s) => typeof s === "string" && s.length >= MIN_SECRET_LENGTH);
    const key = values.join("\u0000");
    if (Registered.last?.key !== key) Registered.last = new Registered(key, values, literalPattern(values));
    return Registered.last;
  }

  /** The values as Latin-1 views of their UTF-8 bytes, for scanning byte arrays. */
  get binary(): RegExp | undefined {
    if (this.bytes === null) this.bytes = literalPattern(this.values.map((v) => bytesToLatin1(new TextEncoder().encode(v))));
    return this.bytes;
  }
}

interface Scan {
  registered: Registered;
  redactions: number;
}

function redactString(text: string, secrets: RegExp | undefined, scan: Scan): string {
  let out = text;
  // Registered values first, so a credential shape can never cut a registered value in two.
  if (secrets) {
    out = out.replace(secrets, () => {
      scan.redactions += 1;
      return redactionMarker(RedactionKind.Secret);
    });
  }
  return out.replace(shapesPattern, (match: string, ...rest: unknown[]) => {
    scan.redactions += 1;
    return markShape(match, rest[rest.length - 1] as Record<string, string | undefined>);
  });
}

function redactBytes(bytes: Uint8Array, scan: Scan): Uint8Array {
  const before = scan.redactions;
  const out = redactString(bytesToLatin1(bytes), scan.registered.binary, scan);
  return scan.redactions === before ? bytes : latin1ToBytes(out);
}

function walk(value: unknown, scan: Scan, open: Set<object>): unknown {
  if (typeof value === "string") return redactString(value, scan.registered.text, scan);
  if (typeof value !== "object" || value === null) return value;
  if (value instanceof Uint8Array) return redactBytes(value, scan);
  if (open.has(value)) return "[Circular]";
  open.add(value);
  try {
    if (Array.isArray(value)) return value.map((item) => walk(item, scan, open));
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value;
    const out: Record<string, unknown> = {};
    for (const [key, member] of Object.entries(value)) {
      out[redactString(key, scan.registered.text, scan)] = walk(member, scan, open);
    }
    return out;
  } finally {
    open.delete(value);
  }
}

/**
 * Returns a copy of `value` in which every string (object keys included, at any depth) has each
 * registered secret value of at least {@link MIN_SECRET_LENGTH} characters, and each credential
 * shape in {@link RedactionKind}, replaced with `[REDACTED:<kind>]`. Byte arrays are scanned as
 * bytes. `redactions` counts the replacements. Other values (numbers, class instances) are kept.
 * Pure and linear in the size of the input.
 */
export function redact(value: unknown, secrets: readonly string[]): { value: unknown; redactions: number } {
  const scan: Scan = { registered: Registered.of(secrets), redactions: 0 };
  return { value: walk(value, scan, new Set()), redactions: scan.redactions };
}
