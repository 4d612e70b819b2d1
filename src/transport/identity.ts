/**
 * Identity material: the operator, system account and Maxwell account keys, the kernel's
 * checkpoint signing key, and user credentials scoped to one identity's subjects. The server
 * enforces these permissions; this module is where the perimeter is drawn.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { dirname, join } from "node:path";
import * as jwt from "@nats-io/jwt";
import { createAccount, createOperator, createServer, fromPublic, fromSeed, type KeyPair } from "@nats-io/nkeys";
import { ErrorCode, MaxwellError } from "../protocol/errors.js";
import { serviceSubjects } from "../protocol/services.js";
import { subjects } from "../protocol/subjects.js";

export type { KeyPair };

/** Writes a secret file with mode 0600 (and its folder 0700). */
export function writeSecret(path: string, content: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function loadOrCreateKey(path: string, create: () => KeyPair): KeyPair {
  if (existsSync(path)) return fromSeed(new TextEncoder().encode(readFileSync(path, "utf8").trim()));
  const kp = create();
  writeSecret(path, new TextDecoder().decode(kp.getSeed()) + "\n");
  return kp;
}

/** Loads a seed file (an nkey seed such as the account key). */
export function loadKey(path: string): KeyPair {
  if (!existsSync(path)) throw new MaxwellError(ErrorCode.NotFound, `key file ${path} does not exist`);
  return fromSeed(new TextEncoder().encode(readFileSync(path, "utf8").trim()));
}

/** The key material of an embedded deployment, kept under `<data>/keys`. */
export interface Authority {
  operator: KeyPair;
  system: KeyPair;
  account: KeyPair;
  /** Signs checkpoints of the log. */
  kernel: KeyPair;
}

export const keyFiles = (keysDir: string) => ({
  operator: join(keysDir, "operator.nk"),
  system: join(keysDir, "system.nk"),
  account: join(keysDir, "account.nk"),
  kernel: join(keysDir, "kernel.nk"),
  kernelPublic: join(keysDir, "kernel.pub"),
});

/** Loads the keys under `keysDir`, creating any that are missing (mode 0600). */
export function loadOrCreateAuthority(keysDir: string): Authority {
  const files = keyFiles(keysDir);
  const authority = {
    operator: loadOrCreateKey(files.operator, createOperator),
    system: loadOrCreateKey(files.system, createAccount),
    account: loadOrCreateKey(files.account, createAccount),
    kernel: loadOrCreateKey(files.kernel, createServer),
  };
  writeFileSync(files.kernelPublic, authority.kernel.getPublicKey() + "\n");
  return authority;
}

const UNLIMITED_NATS = { subs: -1, data: -1, payload: -1 };
const UNLIMITED_ACCOUNT = {
  ...UNLIMITED_NATS,
  conn: -1,
  leaf: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
};

/** User public keys whose credentials are revoked, with the time (unix seconds) they were. */
export type Revocations = Record<string, number>;

const ACCOUNT_LIMITS = {
  ...UNLIMITED_ACCOUNT,
  mem_storage: -1,
  disk_storage: -1,
  streams: -1,
  consumer: -1,
  max_ack_pending: -1,
  mem_max_stream_bytes: -1,
  disk_max_stream_bytes: -1,
  max_bytes_required: false,
};

/** The Maxwell account's JWT, signed by the operator, with the credentials it revokes. */
export async function maxwellAccountJwt(a: Pick<Authority, "operator" | "account">, revocations: Revocations = {}): Promise<string> {
  const claims: Record<string, unknown> = { limits: ACCOUNT_LIMITS };
  if (Object.keys(revocations).length > 0) claims["revocations"] = revocations;
  return jwt.encodeAccount("MAXWELL", a.account, claims, { signer: a.operator });
}

/** Operator and account JWTs for the server config. Every limit is set explicitly. */
export async function accountJwts(a: Authority, revocations: Revocations = {}): Promise<{ operator: string; accounts: Record<string, string>; systemAccount: string }> {
  const systemAccount = a.system.getPublicKey();
  const operator = await jwt.encodeOperator("maxwell", a.operator, { system_account: systemAccount });
  const system = await jwt.encodeAccount("SYS", a.system, { limits: UNLIMITED_ACCOUNT }, { signer: a.operator });
  const account = await maxwellAccountJwt(a, revocations);
  return { operator, systemAccount, accounts: { [systemAccount]: system, [a.account.getPublicKey()]: account } };
}

/** A short-lived system-account credential, for pushing account updates to the server. */
export async function systemCreds(a: Pick<Authority, "system">): Promise<Uint8Array> {
  const user = jwt.createUser();
  const token = await jwt.encodeUser("maxwell-kernel-sys", user, a.system, { ...UNLIMITED_NATS, pub: { allow: ["$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"], deny: [] }, sub: { allow: ["_INBOX.>"], deny: [] } });
  return jwt.fmtCreds(token, user);
}

/** Subject on which the server takes an updated account JWT. */
export function claimsUpdateSubject(accountPublicKey: string): string {
  return `$SYS.REQ.ACCOUNT.${accountPublicKey}.CLAIMS.UPDATE`;
}

/** Publish/subscribe permissions of one NATS user. */
export interface Grants {
  pub: string[];
  sub: string[];
  /** May answer the requests it receives (NATS `allow_responses`, one answer each). */
  respond?: boolean;
}

/** The server-side perimeter of each kind of identity. */
export const grantsFor = {
  /**
   * An agent: publish only its own syscalls, receive only its own deliveries and syscall
   * replies. No `$JS` subject at all: the server answers JetStream API calls (and ack-acks) on
   * whatever reply subject the caller names, without checking it against the caller's publish
   * permissions, so any JetStream access would let an agent aim a server response into the log
   * or at another actor's syscall subject. The kernel reads the agent's durable consumers and
   * delivers over core NATS instead.
   */
  agent(name: string): Grants {
    return {
      pub: [subjects.syscallsOf(name)],
      sub: [subjects.inboxOf(name), subjects.delivery(name)],
    };
  },
  /** A principal (a person or external service): injects work, receives only its own replies. */
  principal(name: string): Grants {
    return { pub: [subjects.syscallsOf(name)], sub: [subjects.inboxOf(name)] };
  },
  /** The kernel: the reference monitor and sole writer of the log. */
  kernel(): Grants {
    return { pub: [">"], sub: [">"] };
  },
  /**
   * The admin CLI: asks the kernel for admin operations, including reading the log. No `$JS`
   * subject: a JetStream API call lets the caller name any reply subject, including the log's.
   */
  admin(): Grants {
    return { pub: [subjects.allAdmin()], sub: ["_INBOX.>"] };
  },
  /**
   * A service behind the kernel (model gateway, tools, memory): it receives only the kernel's
   * calls on its own subjects and may answer each once. It publishes nowhere else: its only
   * publish grant is its own inbox, which nothing else reads.
   */
  service(service: string): Grants {
    const inbox = subjects.inboxOf(serviceSubjects.identity(service));
    // The memory service rebuilds its store from the log, which it reads through the kernel.
    const reads = service === "memory" ? [subjects.admin("read")] : [];
    return { pub: [inbox, ...reads], sub: [serviceSubjects.all(service), inbox], respond: true };
  },
} as const;

export interface MintedUser {
  name: string;
  publicKey: string;
  jwt: string;
  /** Standard NATS creds file content. */
  creds: Uint8Array;
}

/** Mints a user JWT signed by the account key. ~50 ms (pure-JS ed25519): at registration only. */
export async function mintUser(account: KeyPair, name: string, grants: Grants): Promise<MintedUser> {
  const user = jwt.createUser();
  const token = await jwt.encodeUser(name, user, account, {
    ...UNLIMITED_NATS,
    pub: { allow: grants.pub, deny: [] },
    sub: { allow: grants.sub, deny: [] },
    ...(grants.respond ? { resp: { max: 1, ttl: 0 } } : {}),
  });
  return { name, publicKey: user.getPublicKey(), jwt: token, creds: jwt.fmtCreds(token, user) };
}

const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const nodeKeys = new WeakMap<KeyPair, KeyObject>();

/**
 * Signs `message` with an nkey; base64 ed25519 signature. Uses node's native ed25519 (about
 * 60 µs) rather than the nkeys library's pure-JS one (about 13 ms); the signature is the same
 * standard ed25519 signature, checked with nkeys' verify.
 */
export function sign(kp: KeyPair, message: string): string {
  let key = nodeKeys.get(kp);
  if (!key) {
    const raw = (kp as KeyPair & { getRawSeed(): Uint8Array }).getRawSeed();
    key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, Buffer.from(raw)]), format: "der", type: "pkcs8" });
    nodeKeys.set(kp, key);
  }
  return cryptoSign(null, Buffer.from(message, "utf8"), key).toString("base64");
}

const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/** Public keys seen, as node key objects (a log names a handful: the kernel's, a fork's). */
const nodePublicKeys = new Map<string, KeyObject>();

/** The node key object of a public nkey (checked by nkeys: prefix and checksum). */
function nodePublicKey(publicKey: string): KeyObject {
  let key = nodePublicKeys.get(publicKey);
  if (key) return key;
  fromPublic(publicKey);
  // base32 (RFC 4648, unpadded) of: prefix byte, 32-byte ed25519 key, crc16.
  const bytes: number[] = [];
  let bits = 0;
  let value = 0;
  for (const c of publicKey) {
    value = (value << 5) | BASE32.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(bytes.slice(1, 33))]), format: "der", type: "spki" });
  if (nodePublicKeys.size >= 64) nodePublicKeys.clear();
  nodePublicKeys.set(publicKey, key);
  return key;
}

/**
 * Checks a base64 ed25519 signature by a public nkey. False on any malformed input. Native
 * ed25519 (tens of µs) rather than nkeys' pure-JS verify (about 10 ms): an audit or a verify
 * checks many checkpoints.
 */
export function verifySignature(publicKey: string, message: string, signatureBase64: string): boolean {
  try {
    const sig = Buffer.from(signatureBase64, "base64");
    if (sig.length !== 64) return false;
    return cryptoVerify(null, Buffer.from(message, "utf8"), nodePublicKey(publicKey), sig);
  } catch {
    return false;
  }
}
