/**
 * The route table: which model actually answers an agent's call. An operator can send one
 * agent's calls (or every call for an expensive model) to a cheaper model without touching the
 * agent. Pure.
 */

/** One route: calls matching `agent` and `model` (globs; absent matches everything) go to `to`. */
export interface Route {
  /** Agent name glob (`*` any run of characters, `?` one character). */
  agent?: string;
  /** Requested model glob, e.g. `claude-opus-*`. */
  model?: string;
  /** The model to call instead. */
  to: string;
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

function matches(glob: string | undefined, value: string): boolean {
  return glob === undefined || globToRegExp(glob).test(value);
}

/** The model to call for `agent` asking for `model`: the first matching route's `to`, else `model`. */
export function routeModel(routes: readonly Route[], agent: string, model: string): string {
  for (const r of routes) if (matches(r.agent, agent) && matches(r.model, model)) return r.to;
  return model;
}
