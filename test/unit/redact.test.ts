/**
 * Redaction: every registered secret value and every common credential shape is replaced before a
 * tool result or model output is recorded or delivered, wherever it sits in the value, while
 * ordinary prose passes untouched.
 */
import { describe, expect, it } from "vitest";
import { MIN_SECRET_LENGTH, redact } from "../../src/protocol/redact.js";

// Fixtures are assembled at run time so this file itself never holds a credential-shaped literal.
const fake = {
  anthropic: "sk-ant-" + "api03-" + "Xq3vB9kLm2NpR7sT1uV4wY6zA8cD0eF",
  openai: "sk-" + "proj-" + "a1B2c3D4e5F6g7H8i9J0kLmNoPq",
  aws: "AKIA" + "IOSFODNN7EXAMPLE",
  ghp: "ghp_" + "1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R",
  gho: "gho_" + "ZyXwVuTsRqPoNmLkJiHgFeDcBa0987654321",
  pat: "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
  slack: "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
  jwt: "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ" + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
  pem: "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naNVUMjUSDnTr6ZbzV9yQmdYnkMSxs1v6Ck5CSkPb1CqTF1B4mdM8iFx7s8SsbXzl\n-----END " + "RSA PRIVATE KEY-----",
};

describe("redact", () => {
  it.each([
    ["an Anthropic key", `export ANTHROPIC=${"x"} ${fake.anthropic} done`, fake.anthropic, "anthropic-key"],
    ["an OpenAI key", `key ${fake.openai} done`, fake.openai, "openai-key"],
    ["an AWS access key id", `id ${fake.aws} done`, fake.aws, "aws-access-key"],
    ["a GitHub personal token", `token ${fake.ghp} done`, fake.ghp, "github-token"],
    ["a GitHub OAuth token", `oauth ${fake.gho} done`, fake.gho, "github-token"],
    ["a GitHub fine-grained token", `pat ${fake.pat} done`, fake.pat, "github-token"],
    ["a Slack token", `slack ${fake.slack} done`, fake.slack, "slack-token"],
    ["a JWT", `jwt ${fake.jwt} done`, fake.jwt, "jwt"],
    ["a private key block", `key:\n${fake.pem}\nafter`, fake.pem, "private-key"],
  ])("replaces %s with a marker naming its kind", (_what, text, secret, kind) => {
    const { value, redactions } = redact(text, []);
    expect(value).not.toContain(secret);
    expect(value).toContain(`[REDACTED:${kind}]`);
    expect(redactions).toBe(1);
    expect(value).toMatch(/done$|after$/);
  });

  it("keeps the word Bearer and replaces the token after it", () => {
    const token = "abc123DEF456ghi789JKL";
    expect(redact(`Authorization: Bearer ${token}`, [])).toEqual({ value: "Authorization: Bearer [REDACTED:bearer-token]", redactions: 1 });
  });

  it.each([
    ["password=hunter2", "password=[REDACTED:credential]"],
    ["DB_PASSWORD=Tr0ub4dor&3", "DB_PASSWORD=[REDACTED:credential]&3"],
    ["token: 9f8e7d6c5b4a", "token: [REDACTED:credential]"],
    ['{"api_key": "correct horse battery staple"}', '{"api_key": "[REDACTED:credential]"}'],
    ["client_secret='s3cr3t-value'", "client_secret='[REDACTED:credential]'"],
    ["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [REDACTED:credential]"],
    ["postgres://admin:pa55word@db.internal:5432/prod", "postgres://admin:[REDACTED:credential]@db.internal:5432/prod"],
  ])("replaces the value of the assignment %s and keeps its key", (text, expected) => {
    expect(redact(text, []).value).toBe(expected);
  });

  it("replaces every registered secret value, wherever it is in a nested value, keys included", () => {
    const secret = "correct-horse-battery";
    const input = {
      summary: `the password is ${secret}, really`,
      rows: [{ note: secret }, [`x${secret}y`, 42, null, true]],
      [secret]: "as a key",
      deep: { a: { b: { c: { d: `prefix ${secret}` } } } },
    };
    const { value, redactions } = redact(input, [secret]);
    expect(JSON.stringify(value)).not.toContain(secret);
    expect(redactions).toBe(5);
    expect(value).toEqual({
      summary: "the password is [REDACTED:secret], really",
      rows: [{ note: "[REDACTED:secret]" }, ["x[REDACTED:secret]y", 42, null, true]],
      "[REDACTED:secret]": "as a key",
      deep: { a: { b: { c: { d: "prefix [REDACTED:secret]" } } } },
    });
  });

  it("replaces a registered secret in bytes, and hands back the very same bytes when there is none", () => {
    const secret = "correct-horse-battery";
    const bytes = new TextEncoder().encode(`blob ${secret} blob`);
    const { value, redactions } = redact({ data: bytes }, [secret]);
    expect(redactions).toBe(1);
    expect(new TextDecoder().decode((value as { data: Uint8Array }).data)).toBe("blob [REDACTED:secret] blob");
    const clean = new TextEncoder().encode("nothing here");
    expect((redact({ data: clean }, [secret]).value as { data: Uint8Array }).data).toBe(clean);
  });

  it("replaces a registered value whole even when a credential shape would match part of it", () => {
    const secret = "token: tok3n with spaces";
    expect(redact(`config ${secret} end`, [secret]).value).toBe("config [REDACTED:secret] end");
  });

  it("replaces the longer of two registered values that overlap, whole", () => {
    expect(redact("abcdefgh-ijkl", ["abcdefgh", "abcdefgh-ijkl"]).value).toBe("[REDACTED:secret]");
  });

  it("treats registered values literally, regex characters included", () => {
    const secret = "a.b*c+d?(e)[f]$^|\\";
    expect(redact(`x ${secret} y aXb*c+d`, [secret]).value).toBe("x [REDACTED:secret] y aXb*c+d");
  });

  it(`ignores registered values shorter than ${MIN_SECRET_LENGTH} characters, which would match ordinary text`, () => {
    expect(redact("the cat sat", ["cat", "the"])).toEqual({ value: "the cat sat", redactions: 0 });
  });

  it("leaves ordinary prose, code and numbers alone", () => {
    const prose = [
      "The bearer of bad news said the secret: patience. A token of thanks; password policies are required.",
      "max_tokens: 1024, input_tokens=12, the task-runner-with-a-long-name works, risk-adjusted returns.",
      "Tokens: 5. Set the token: either way. See https://example.com/docs?page=2 and user@example.com.",
      "function f(a, b) { return a + b; } // sk-learn is a library; AKIA is a prefix",
      "-----BEGIN PUBLIC KEY----- is not a private key",
    ].join("\n");
    expect(redact({ prose, n: 3, ok: true }, ["registered-value"])).toEqual({ value: { prose, n: 3, ok: true }, redactions: 0 });
  });

  it("does not redact a marker again", () => {
    const once = redact("password=hunter2 Bearer abcdefghijklmnop1234", []).value as string;
    expect(redact(once, [])).toEqual({ value: once, redactions: 0 });
  });

  it("scans a 1 MB string in one pass and finds what is at its end", () => {
    const secret = "registered-canary-value";
    const big = "lorem ipsum dolor sit amet, ".repeat(40_000) + `${secret} ${fake.aws}`;
    expect(big.length).toBeGreaterThan(1_000_000);
    const { value, redactions } = redact(big, [secret]);
    expect(redactions).toBe(2);
    expect((value as string).endsWith("[REDACTED:secret] [REDACTED:aws-access-key]")).toBe(true);
  });

  // Each input is quadratic for a naive pattern (a lazy scan to the end per BEGIN, a rescan per
  // key word): minutes at these sizes, where a linear scan takes well under a second. The timeout
  // is the assertion.
  it("handles adversarial 1-2 MB inputs (unterminated key blocks, runs of key words) without backtracking blow-up", { timeout: 15_000 }, () => {
    for (const text of ["-----BEGIN PRIVATE KEY-----".repeat(80_000), "token:".repeat(170_000), "password=\n".repeat(100_000), "a-".repeat(500_000), "eyJa.".repeat(200_000)]) {
      expect(typeof redact(text, ["some-registered-value"]).value).toBe("string");
    }
  });
});
