/**
 * Memory for people: the operator requests `maxwell memory ...` sends to the kernel on
 * `mx.admin.memory`, which the kernel forwards here as a call with op `admin` and the request as
 * its args. Answers carry record values in the clear (they are not logged). Nothing here writes:
 * an import is a logged write the kernel carries out; `import-check` only validates one.
 *
 * | request                                                   | answer                                             |
 * | --------------------------------------------------------- | -------------------------------------------------- |
 * | `{op:"ls"}`                                               | `{namespaces:[{namespace,kv,episodes,revision,dimension?}], appliedSeq, resumeSeq}` |
 * | `{op:"get", namespace, key}`                              | `{record}` (null when absent)                      |
 * | `{op:"search", namespace \| namespaces, query?, vector?, mode?, k?, tags?, since?, until?}` | `{hits}` |
 * | `{op:"export", namespace, cursor?}`                       | `{lines, next?}`: JSON Lines, paged below one NATS message |
 * | `{op:"digest", at?, namespaces?}`                         | `{digest, at, appliedSeq, resumeSeq}`              |
 * | `{op:"import-check", lines, namespace?}`                  | `{namespace, records, revision}` or `bad_request` naming the line |
 * | `{op:"verify"}` (answered in service.ts: it reads the log) | `MemoryVerifyResult` (src/runtime/admin.ts)        |
 */
import { ErrorCode, MaxwellError } from "../../src/protocol/mod.js";
import type { ExportCursor } from "./export.js";
import { parseNamespace } from "../../src/memory/namespace.js";
import { SearchMode, parseMemoryArgs } from "../../src/memory/ops.js";
import { checkKey, checkTime } from "../../src/memory/record.js";
import { recordView } from "../../src/memory/sealing.js";
import type { MemoryStore } from "./store.js";
import { searchStore } from "./reads.js";

/** Admin sub-operations. */
export const AdminRequest = {
  Ls: "ls",
  Get: "get",
  Search: "search",
  Export: "export",
  Digest: "digest",
  ImportCheck: "import-check",
} as const;
export type AdminRequest = (typeof AdminRequest)[keyof typeof AdminRequest];

/** Bytes of JSON Lines per export page: well under NATS's 1 MiB message with the reply around them. */
export const EXPORT_PAGE_BYTES = 512 * 1024;

function bad(message: string, field?: string): MaxwellError {
  return new MaxwellError(ErrorCode.BadRequest, message, field === undefined ? undefined : { detail: { field } });
}

function encodeCursor(c: ExportCursor): string {
  return Buffer.from(JSON.stringify([c.at, c.kind, c.key])).toString("base64url");
}

function decodeCursor(text: unknown): ExportCursor {
  if (typeof text !== "string" || text.length > 4096) throw bad("export: invalid cursor", "cursor");
  try {
    const [at, kind, key] = JSON.parse(Buffer.from(text, "base64url").toString("utf8")) as [number, "kv" | "episode", string];
    return { at, kind, key };
  } catch (err) {
    throw new MaxwellError(ErrorCode.BadRequest, "export: invalid cursor (pass the 'next' of the previous page)", { cause: err, detail: { field: "cursor" } });
  }
}

/**
 * Answers one operator request. The store's clock must read the request's time (the caller sets
 * it): TTL visibility is judged then.
 */
export async function answerAdmin(store: MemoryStore, body: unknown, at: number): Promise<unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("memory admin: expected { op, ... }");
  const b = body as Record<string, unknown>;
  switch (b["op"]) {
    case AdminRequest.Ls:
      return {
        namespaces: store.namespaces().map((info) => ({ ...store.count(info.namespace), ...info })),
        appliedSeq: store.appliedSeq(),
        resumeSeq: store.resumeSeq(),
      };
    case AdminRequest.Get: {
      const ns = parseNamespace(b["namespace"]);
      const record = store.get(ns, checkKey(b["key"]));
      return { record: record === undefined ? null : recordView(record) };
    }
    case AdminRequest.Search: {
      const { op: _op, namespace, ...rest } = b;
      const target = parseNamespace(namespace ?? (Array.isArray(rest["namespaces"]) ? rest["namespaces"][0] : undefined));
      const mode = rest["mode"] ?? (rest["vector"] === undefined ? SearchMode.Text : rest["query"] === undefined ? SearchMode.Vector : SearchMode.Hybrid);
      const args = parseMemoryArgs("search", { k: 10, ...rest, mode });
      return { hits: searchStore(store, target, args).map((h) => ({ ...h, record: recordView(h.record) })) };
    }
    case AdminRequest.Export: {
      const ns = parseNamespace(b["namespace"]);
      const after = b["cursor"] === undefined ? undefined : decodeCursor(b["cursor"]);
      const page = store.exportPage(ns, { maxBytes: EXPORT_PAGE_BYTES, ...(after ? { after } : {}) });
      return { lines: page.lines, ...(page.next ? { next: encodeCursor(page.next) } : {}) };
    }
    case AdminRequest.Digest: {
      const instant = b["at"] === undefined ? at : checkTime(b["at"], "at");
      const namespaces = b["namespaces"];
      if (namespaces !== undefined && !Array.isArray(namespaces)) throw bad("digest: 'namespaces' must be an array", "namespaces");
      return {
        digest: store.digest({ at: instant, ...(namespaces ? { namespaces: namespaces as string[] } : {}) }),
        at: instant,
        appliedSeq: store.appliedSeq(),
        resumeSeq: store.resumeSeq(),
      };
    }
    case AdminRequest.ImportCheck: {
      const lines = b["lines"];
      if (typeof lines !== "string" && !(Array.isArray(lines) && lines.every((l) => typeof l === "string"))) {
        throw bad("import-check: 'lines' must be the export's text or an array of its lines", "lines");
      }
      const namespace = b["namespace"] === undefined ? undefined : parseNamespace(b["namespace"]);
      return store.checkImport(typeof lines === "string" ? lines : lines.join("\n"), namespace ? { namespace } : {});
    }
    default:
      throw bad(`memory admin: unknown op ${JSON.stringify(b["op"])}; expected one of ${Object.values(AdminRequest).join(", ")}`, "op");
  }
}
