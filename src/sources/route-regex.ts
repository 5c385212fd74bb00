// Regular expressions in Gateway API matches are RE2 in Envoy (linear
// time); the waypoint runs them in JavaScript's backtracking engine on input
// the client chooses. A pattern is refused here when it uses what RE2 lacks
// (the route would mean something else under Istio) or has a shape known to
// backtrack badly; the waypoint also bounds the input a pattern sees
// (src/waypoint/regex.ts). docs/waypoint.md, "Regular expressions", has the
// figures.

/** Wide unbounded repeats (.*, .+, [^x]*, \S+ …) one pattern may hold: three make a near-miss cost n³. */
const MAX_WIDE_REPEATS = 2;

/** A quantifier at i: *, +, ?, {n}, {n,}, {n,m}. */
function quantifierAt(p: string, i: number): { end: number; unbounded: boolean; repeats: boolean } | undefined {
  const c = p[i];
  if (c === '*' || c === '+') return { end: i + 1, unbounded: true, repeats: true };
  if (c === '?') return { end: i + 1, unbounded: false, repeats: false };
  const m = c === '{' ? /^\{(\d+)(,(\d*))?\}/.exec(p.slice(i)) : null;
  if (!m) return undefined;
  const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
  return { end: i + m[0].length, unbounded: max === Infinity, repeats: max > 1 };
}

/**
 * Why a pattern is refused, or undefined: backreferences and lookaround
 * (RE2 has neither, so the route would mean something else under Istio),
 * a repeated group containing a repeat ((a+)+: exponential on a near-miss)
 * and more than MAX_WIDE_REPEATS wide unbounded repeats (polynomial).
 */
export function regexShapeProblem(p: string): string | undefined {
  const groups: boolean[] = []; // per open group: whether a repeat is inside
  let wide = 0;
  let last: { group: boolean; nested: boolean; wide: boolean } | undefined;
  let i = 0;
  while (i < p.length) {
    const c = p[i];
    if (c === '\\') {
      const n = p[i + 1] ?? '';
      if (/[1-9k]/.test(n)) return 'backreferences are not supported (RE2, the engine Envoy uses, has none)';
      last = { group: false, nested: false, wide: /[SDWs]/.test(n) };
      i += 2;
    } else if (c === '[') {
      let j = i + 1 + (p[i + 1] === '^' ? 1 : 0);
      if (p[j] === ']') j++;
      while (j < p.length && p[j] !== ']') j += p[j] === '\\' ? 2 : 1;
      last = { group: false, nested: false, wide: p[i + 1] === '^' };
      i = j + 1;
    } else if (c === '(') {
      if (/^\(\?<?[=!]/.test(p.slice(i, i + 4))) return 'lookahead and lookbehind are not supported (RE2, the engine Envoy uses, has none)';
      groups.push(false);
      last = undefined;
      i += p.startsWith('(?:', i) ? 3 : p.startsWith('(?<', i) ? Math.max(p.indexOf('>', i) + 1, i + 3) : 1;
    } else if (c === ')') {
      last = { group: true, nested: groups.pop() ?? false, wide: false };
      i++;
    } else {
      const q = quantifierAt(p, i);
      if (!q) {
        last = { group: false, nested: false, wide: c === '.' };
        i++;
        continue;
      }
      if (last?.group && last.nested && q.repeats)
        return 'a repeated group that contains a repeat, e.g. (a+)+, can take exponential time; write it without the nesting';
      if (last?.wide && q.unbounded && ++wide > MAX_WIDE_REPEATS)
        return `more than ${MAX_WIDE_REPEATS} unbounded repeats of a wide class (.*, .+, [^/]*) cost n^${wide} on a near-miss; put literals between them`;
      if (groups.length > 0 && (q.repeats || last?.nested)) groups[groups.length - 1] = true;
      last = undefined;
      i = q.end + (p[q.end] === '?' ? 1 : 0);
    }
  }
  return undefined;
}

/** A full-match RegExp (RE2's FullMatch, as Envoy applies route regexes), or why not. */
export function compileRouteRegex(pattern: string): { regex: RegExp } | { why: string } {
  if (pattern === '') return { why: 'must not be empty' };
  const shape = regexShapeProblem(pattern);
  if (shape) return { why: shape };
  try {
    return { regex: new RegExp(`^(?:${pattern})$`) };
  } catch (err) {
    return { why: `is not a valid regular expression (${(err as Error).message})` };
  }
}
