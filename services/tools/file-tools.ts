/**
 * The workspace file tools: `file-read` (read), `file-list` (read) and `file-write` (write), all
 * confined to one {@link Workspace}. Limits come from the service's configuration, not the
 * manifests, so changing a limit does not change what the kernel pinned.
 */
import { ErrorCode, MaxwellError } from "../../src/protocol/errors.js";
import { ToolEffect } from "../../src/protocol/services.js";
import { defineTool, type Tool } from "./tool.js";
import type { Workspace } from "./workspace.js";

export interface FileToolLimits {
  /** Most bytes `file-read` returns; a longer file comes back truncated (default 256 KiB). */
  maxReadBytes?: number;
  /** Largest file `file-write` writes (default 256 KiB). */
  maxWriteBytes?: number;
  /** Most entries `file-list` returns (default 1000). */
  maxListEntries?: number;
  /** Labels added to what `file-read` and `file-list` return (e.g. `["untrusted"]` for a shared folder). */
  labels?: string[];
}

export const FILE_DEFAULTS = { maxReadBytes: 256 * 1024, maxWriteBytes: 256 * 1024, maxListEntries: 1000 } as const;

const path = { type: "string", minLength: 1, maxLength: 4096, description: "Path relative to the workspace root ('/'-separated)." } as const;
const encoding = { type: "string", enum: ["utf8", "base64"], description: "How content is carried: text (default) or base64 bytes." } as const;

type Encoding = "utf8" | "base64";

function decodeContent(content: string, enc: Encoding): Uint8Array {
  if (enc === "utf8") return new TextEncoder().encode(content);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(content) || content.length % 4 !== 0) {
    throw new MaxwellError(ErrorCode.BadRequest, "content is not valid base64");
  }
  return new Uint8Array(Buffer.from(content, "base64"));
}

/** The three file tools over `workspace`. */
export function fileTools(workspace: Workspace, limits: FileToolLimits = {}): Tool[] {
  const maxRead = limits.maxReadBytes ?? FILE_DEFAULTS.maxReadBytes;
  const maxWrite = limits.maxWriteBytes ?? FILE_DEFAULTS.maxWriteBytes;
  const maxList = limits.maxListEntries ?? FILE_DEFAULTS.maxListEntries;
  const labels = limits.labels ?? [];

  const read = defineTool<{ path: string; encoding?: Encoding }>({
    manifest: {
      name: "file-read",
      version: "1.0.0",
      description: "Reads a regular file in the workspace. Returns its text (or base64 bytes) and size; a file over the service's limit comes back truncated.",
      effect: ToolEffect.Read,
      idempotent: true,
      input: { type: "object", properties: { path, encoding }, required: ["path"], additionalProperties: false },
      output: {
        type: "object",
        properties: { path: { type: "string" }, size: { type: "integer" }, encoding, content: { type: "string" }, truncated: { type: "boolean" } },
        required: ["path", "size", "encoding", "content", "truncated"],
      },
    },
    labels,
    async handler(args) {
      const enc = args.encoding ?? "utf8";
      const r = await workspace.read(args.path, maxRead);
      const content = enc === "utf8" ? new TextDecoder().decode(r.bytes) : Buffer.from(r.bytes).toString("base64");
      return { path: r.path, size: r.size, encoding: enc, content, truncated: r.truncated };
    },
  });

  const list = defineTool<{ path?: string }>({
    manifest: {
      name: "file-list",
      version: "1.0.0",
      description: "Lists a folder in the workspace (default: the root): each entry's name, type (file, dir, symlink, other) and, for files, size. Symlinks are reported, not followed.",
      effect: ToolEffect.Read,
      idempotent: true,
      input: { type: "object", properties: { path: { ...path, minLength: 0 } }, additionalProperties: false },
      output: {
        type: "object",
        properties: {
          path: { type: "string" },
          entries: {
            type: "array",
            items: {
              type: "object",
              properties: { name: { type: "string" }, type: { type: "string", enum: ["file", "dir", "symlink", "other"] }, size: { type: "integer" } },
              required: ["name", "type"],
            },
          },
          truncated: { type: "boolean" },
        },
        required: ["path", "entries", "truncated"],
      },
    },
    labels,
    handler: (args) => workspace.list(args.path ?? ".", maxList),
  });

  const write = defineTool<{ path: string; content: string; encoding?: Encoding; createDirs?: boolean; overwrite?: boolean }>({
    manifest: {
      name: "file-write",
      version: "1.0.0",
      description: "Writes a whole regular file in the workspace, atomically. Refuses symlinks and special files; creates missing folders only with createDirs; refuses to replace an existing file when overwrite is false.",
      effect: ToolEffect.Write,
      idempotent: true,
      input: {
        type: "object",
        properties: {
          path,
          content: { type: "string" },
          encoding,
          createDirs: { type: "boolean", description: "Create missing parent folders (default false)." },
          overwrite: { type: "boolean", description: "Replace an existing file (default true)." },
        },
        required: ["path", "content"],
        additionalProperties: false,
      },
      output: {
        type: "object",
        properties: { path: { type: "string" }, size: { type: "integer" }, created: { type: "boolean" } },
        required: ["path", "size", "created"],
      },
    },
    async handler(args) {
      const bytes = decodeContent(args.content, args.encoding ?? "utf8");
      if (bytes.byteLength > maxWrite) {
        throw new MaxwellError(ErrorCode.BadRequest, `content is ${bytes.byteLength} bytes; this workspace takes files of at most ${maxWrite} bytes`);
      }
      return workspace.write(args.path, bytes, {
        ...(args.createDirs !== undefined ? { createDirs: args.createDirs } : {}),
        ...(args.overwrite !== undefined ? { overwrite: args.overwrite } : {}),
      });
    },
  });

  return [read, list, write];
}
