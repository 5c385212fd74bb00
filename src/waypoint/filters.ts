// What a rule's filters do to a request or a response, as Gateway API
// defines them: header modifiers, URL rewrite and redirect. Pure functions
// over plain header maps (names in lower case, as Node gives them).
import { hostOnly } from './authz';
import type { HeaderModifier, PathMatch, PathModifier, RouteFilter } from './types';

export type HeaderMap = Record<string, string | string[] | undefined>;

/** A copy of the headers with the modifier applied: set replaces, add appends with ",", remove deletes. */
export function modifyHeaders(h: Readonly<HeaderMap>, m: HeaderModifier): HeaderMap {
  const out: HeaderMap = { ...h };
  for (const name of m.remove) delete out[name];
  for (const { name, value } of m.set) out[name] = value;
  for (const { name, value } of m.add) {
    const prev = out[name];
    out[name] = prev === undefined ? value : `${typeof prev === 'string' ? prev : prev.join(',')},${value}`;
  }
  return out;
}

const trimSlash = (s: string): string => (s.endsWith('/') ? s.slice(0, -1) : s);

/**
 * The path after a modifier. ReplacePrefixMatch swaps the matched prefix
 * element-wise (Gateway API's table: /foo/bar with prefix /foo and
 * replacement /xyz becomes /xyz/bar; an empty replacement leaves /bar), so
 * it needs the PathPrefix match that selected the rule.
 */
export function rewritePath(path: string, match: PathMatch, m: PathModifier): string {
  if (m.type === 'ReplaceFullPath') return m.value;
  if (match.type !== 'PathPrefix') return path; // the source refuses this combination
  const prefix = match.value === '/' ? '' : trimSlash(match.value);
  const rest = path.slice(prefix.length);
  const out = trimSlash(m.value) + rest;
  return out === '' ? '/' : out.startsWith('/') ? out : `/${out}`;
}

const splitTarget = (target: string): [string, string] => {
  const q = target.indexOf('?');
  return q < 0 ? [target, ''] : [target.slice(0, q), target.slice(q)];
};

/** The request target after a URLRewrite (query kept) and the Host to send, if rewritten. */
export function applyRewrite(
  target: string,
  match: PathMatch,
  f: Extract<RouteFilter, { type: 'URLRewrite' }>,
): { target: string; host?: string } {
  const [path, query] = splitTarget(target);
  return { target: (f.path ? rewritePath(path, match, f.path) : path) + query, ...(f.hostname ? { host: f.hostname } : {}) };
}

const WELL_KNOWN: Record<string, number> = { http: 80, https: 443 };

/**
 * The status and Location of a RequestRedirect. Without a port in the
 * filter: the scheme's well-known port if the filter sets a scheme, else
 * the port the request came to; a well-known port is left out.
 */
export function redirect(
  req: { scheme: 'http' | 'https'; host: string; port: number; target: string },
  match: PathMatch,
  f: Extract<RouteFilter, { type: 'RequestRedirect' }>,
): { status: number; location: string } {
  const scheme = f.scheme ?? req.scheme;
  const port = f.port ?? (f.scheme ? WELL_KNOWN[f.scheme] : req.port);
  const host = f.hostname ?? hostOnly(req.host);
  const [path, query] = splitTarget(req.target);
  const newPath = f.path ? rewritePath(path, match, f.path) : path;
  const authority = port === WELL_KNOWN[scheme] ? host : `${host}:${port}`;
  return { status: f.statusCode, location: `${scheme}://${authority}${newPath}${query}` };
}
