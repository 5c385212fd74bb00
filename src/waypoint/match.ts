// Which rule a request takes. Gateway API defines one order across every
// rule of every route attached to a service (docs/waypoint.md,
// "Precedence"); it is computed once per configuration, when the table is
// built, so a request walks a sorted list and stops at its first match.
import { regexMatches } from './regex';
import type { PathMatch, RouteMatch, RouteRule, ServiceRoutes, ValueMatch } from './types';

/** What matching looks at in a request. Header names in lower case (as Node gives them). */
export interface RequestFacts {
  method: string;
  /** The request target: path with an optional ?query. */
  target: string;
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** One match of one rule, the unit Gateway API orders. */
export interface Candidate {
  rule: RouteRule;
  match: RouteMatch;
  /** Index of the match in rule.matches. */
  matchIndex: number;
}

const PATH_RANK: Record<PathMatch['type'], number> = { Exact: 3, PathPrefix: 2, Prefix: 2, RegularExpression: 1 };

const byCreation = (a: string, b: string): number => (a === b ? 0 : a === '' ? 1 : b === '' ? -1 : a < b ? -1 : 1);
const byText = (a: string, b: string): number => (a === b ? 0 : a < b ? -1 : 1);

/**
 * Gateway API's precedence, highest first: Exact path, then the longest
 * PathPrefix, then (implementation-specific, as Istio ranks it) regular
 * expressions, longest first; a method; most headers; most query
 * parameters. Ties: the oldest route, then "<namespace>/<name>", then rule
 * and match order.
 */
export function comparePrecedence(a: Candidate, b: Candidate): number {
  const [ma, mb] = [a.match, b.match];
  // A VirtualService's http routes are tried in the order written (Istio: first match wins); a service takes
  // its routes from VirtualServices or from Gateway API routes, never both (src/sources/virtual-service.ts).
  if (a.rule.origin.kind === 'VirtualService' && b.rule.origin.kind === 'VirtualService')
    return (
      byCreation(a.rule.origin.created, b.rule.origin.created) ||
      byText(`${a.rule.origin.namespace}/${a.rule.origin.name}`, `${b.rule.origin.namespace}/${b.rule.origin.name}`) ||
      a.rule.origin.order - b.rule.origin.order ||
      a.rule.index - b.rule.index ||
      a.matchIndex - b.matchIndex
    );
  return (
    PATH_RANK[mb.path.type] - PATH_RANK[ma.path.type] ||
    mb.path.value.length - ma.path.value.length ||
    Number(mb.method !== undefined) - Number(ma.method !== undefined) ||
    mb.headers.length - ma.headers.length ||
    mb.queryParams.length - ma.queryParams.length ||
    byCreation(a.rule.origin.created, b.rule.origin.created) ||
    byText(`${a.rule.origin.namespace}/${a.rule.origin.name}`, `${b.rule.origin.namespace}/${b.rule.origin.name}`) ||
    a.rule.origin.order - b.rule.origin.order ||
    a.rule.index - b.rule.index ||
    a.matchIndex - b.matchIndex
  );
}

/** Element-wise prefix: "/a" and "/a/" both match "/a", "/a/" and "/a/b", never "/ab". */
export function pathMatches(m: PathMatch, path: string): boolean {
  switch (m.type) {
    case 'Exact':
      return path === m.value;
    case 'PathPrefix': {
      const prefix = m.value.length > 1 && m.value.endsWith('/') ? m.value.slice(0, -1) : m.value;
      return prefix === '/' || path === prefix || path.startsWith(`${prefix}/`);
    }
    case 'Prefix':
      return path.startsWith(m.value);
    case 'RegularExpression':
      return regexMatches(m.regex, path);
  }
}

function valueMatches(m: ValueMatch, v: string | undefined): boolean {
  if (v === undefined) return false;
  return m.type === 'Exact' ? v === m.value : regexMatches(m.regex, v);
}

/** A header's value as one string; repeated headers are joined with "," (RFC 9110 §5.3). */
function header(h: RequestFacts['headers'], name: string): string | undefined {
  const v = h[name];
  return v === undefined ? undefined : typeof v === 'string' ? v : v.join(',');
}

/** The request's path and a lazily parsed query (first value of each name, as Gateway API recommends). */
class Target {
  readonly path: string;
  private readonly rawQuery: string;
  private parsed?: URLSearchParams;

  constructor(target: string) {
    const q = target.indexOf('?');
    this.path = q < 0 ? target : target.slice(0, q);
    this.rawQuery = q < 0 ? '' : target.slice(q + 1);
  }

  query(name: string): string | undefined {
    this.parsed ??= new URLSearchParams(this.rawQuery);
    return this.parsed.get(name) ?? undefined;
  }
}

function matches(m: RouteMatch, req: RequestFacts, t: Target): boolean {
  return (
    (m.method === undefined || m.method === req.method) &&
    pathMatches(m.path, t.path) &&
    m.headers.every((h) => valueMatches(h, header(req.headers, h.name))) &&
    m.queryParams.every((q) => valueMatches(q, t.query(q.name)))
  );
}

function ordered(routes: readonly ServiceRoutes[]): Candidate[] {
  return routes
    .flatMap((r) => r.rules.flatMap((rule) => rule.matches.map((match, matchIndex) => ({ rule, match, matchIndex }))))
    .sort(comparePrecedence);
}

/**
 * The rules of every service, each port's candidates in precedence order.
 * Routes attached to one port of a service (parentRefs[].port) join the
 * routes attached to the whole service for that port only.
 */
export class RouteTable {
  private readonly byService = new Map<string, { anyPort: Candidate[]; perPort: Map<number, Candidate[]> }>();

  constructor(routes: readonly ServiceRoutes[]) {
    const grouped = new Map<string, ServiceRoutes[]>();
    for (const r of routes) grouped.set(r.service, [...(grouped.get(r.service) ?? []), r]);
    for (const [service, list] of grouped) {
      const whole = list.filter((r) => r.port === undefined);
      const ports = new Set(list.flatMap((r) => (r.port === undefined ? [] : [r.port])));
      const perPort = new Map([...ports].map((p) => [p, ordered([...whole, ...list.filter((r) => r.port === p)])] as const));
      this.byService.set(service, { anyPort: ordered(whole), perPort });
    }
  }

  /**
   * Whether a route applies to the service (on that port, when given): if
   * not, the waypoint forwards the request to the service as it came. A
   * route attached to port 80 only leaves the service's other ports unrouted.
   */
  has(service: string, port?: number): boolean {
    const s = this.byService.get(service);
    if (!s || port === undefined) return s !== undefined;
    return s.anyPort.length > 0 || s.perPort.has(port);
  }

  /** The candidates of a service port in the order they are tried. */
  candidates(service: string, port: number): readonly Candidate[] {
    const s = this.byService.get(service);
    return s ? (s.perPort.get(port) ?? s.anyPort) : [];
  }

  /** The first candidate the request satisfies, or undefined (Gateway API: 404, response flag NR). */
  route(service: string, port: number, req: RequestFacts): Candidate | undefined {
    const t = new Target(req.target);
    for (const c of this.candidates(service, port)) if (matches(c.match, req, t)) return c;
    return undefined;
  }
}
