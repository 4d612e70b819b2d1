/**
 * Answering the read operations (`get`, `range`, `list`, `search`) from the store. The store's
 * clock must read the call's time while these run (TTL visibility is judged then); they are
 * synchronous, so nothing else runs in between.
 */
import { joinLabels, type Labels } from "../../src/protocol/mod.js";
import { MemoryOp, SearchMode, parseMemoryArgs, type MemoryResultByOp, type SearchArgs } from "../../src/memory/ops.js";
import type { MemoryRecord } from "../../src/memory/record.js";
import type { SearchHit } from "./search.js";
import type { MemoryStore } from "./store.js";
import type { NamespaceKeys } from "../../src/memory/keys.js";
import { recordView } from "../../src/memory/sealing.js";

/** Runs a search over `args.namespaces` (default: the target), which the kernel authorized. */
export function searchStore(store: MemoryStore, target: string, args: SearchArgs): SearchHit[] {
  const namespaces = args.namespaces ?? [target];
  const filter = {
    permitted: namespaces,
    k: args.k,
    ...(args.tags ? { tags: args.tags } : {}),
    ...(args.since !== undefined ? { from: args.since } : {}),
    ...(args.until !== undefined ? { to: args.until } : {}),
  };
  switch (args.mode) {
    case SearchMode.Text:
      return store.searchText({ ...filter, query: args.query as string });
    case SearchMode.Vector:
      return store.searchVector({ ...filter, vector: args.vector as number[] });
    case SearchMode.Hybrid:
      return store.searchHybrid({ ...filter, query: args.query as string, vector: args.vector as number[] });
  }
}

/** A read's answer, and the labels of the records in it (joined: a poisoned memory stays marked). */
export interface ReadAnswer {
  result: MemoryResultByOp["get" | "range" | "list" | "search"];
  labels: Labels;
}

/**
 * Answers a read. With `keys`, record contents are sealed under their namespace keys (answers
 * to the kernel, which logs them); without, they are in the clear.
 */
export function answerRead(store: MemoryStore, op: string, target: string, rawArgs: unknown, keys: NamespaceKeys | undefined): ReadAnswer {
  const records: MemoryRecord[] = [];
  const view = (r: MemoryRecord) => {
    records.push(r);
    return recordView(r, keys);
  };
  let result: ReadAnswer["result"];
  switch (op) {
    case MemoryOp.Get: {
      const args = parseMemoryArgs(op, rawArgs);
      const record = store.get(target, args.key);
      result = { record: record === undefined ? null : view(record) };
      break;
    }
    case MemoryOp.Range: {
      const args = parseMemoryArgs(op, rawArgs);
      result = { records: store.episodes(target, args).map(view) };
      break;
    }
    case MemoryOp.List: {
      const args = parseMemoryArgs(op, rawArgs);
      result = { records: store.list(target, args).map(view) };
      break;
    }
    default: {
      const args = parseMemoryArgs(MemoryOp.Search, rawArgs);
      result = {
        hits: searchStore(store, target, args).map((hit) => {
          const out: MemoryResultByOp["search"]["hits"][number] = { record: view(hit.record), score: hit.score };
          if (hit.text) out.text = hit.text;
          if (hit.vector) out.vector = hit.vector;
          return out;
        }),
      };
    }
  }
  return { result, labels: joinLabels(...records.map((r) => r.provenance.labels)) };
}
