// Regular expressions from route matches run on every request, in
// JavaScript's backtracking engine, on input the client chooses. Envoy runs
// them in RE2 (linear time); here a pattern is refused when it uses what RE2
// lacks (so a route means the same under Istio) or has a shape known to
// backtrack badly, and the input a pattern sees is bounded:
// - backreferences and lookaround: not RE2, refused;
// - a quantified group that itself contains a quantifier, e.g. (a+)+ or
//   (x*y)*: exponential on a near-miss, refused;
// - more than two `.*`/`.+`-like wide repeats: each one multiplies the work
//   on a long near-miss (three are n³), refused;
// - input longer than MAX_REGEX_INPUT characters never matches, so one
//   request's cost is bounded (n² of 4 KiB).
// The check is conservative; a pattern it lets through was also timed in
// the unit tests against near-miss input of the maximum length.

/** Longest value a regular expression is run on; longer values do not match. */
export const MAX_REGEX_INPUT = 4096;
/** Wide unbounded repeats (`.*`, `.+`, `[^x]*`, `\S+` …) one pattern may hold. */
const MAX_WIDE_REPEATS = 2;

export type RegexResult = { ok: true; regex: RegExp } | { ok: false; why: string };

interface Group {
  quantifiedInside: boolean;
}

/** True when a quantifier starts at i: *, +, ?, or a well-formed {n}, {n,}, {n,m}. */
function quantifierAt(p: string, i: number): { end: number; unbounded: boolean; repeats: boolean } | undefined {
  const c = p[i];
  if (c === '*' || c === '+') return { end: i + 1, unbounded: true, repeats: true };
  if (c === '?') return { end: i + 1, unbounded: false, repeats: false };
  if (c !== '{') return undefined;
  const m = /^\{(\d+)(,(\d*))?\}/.exec(p.slice(i));
  if (!m) return undefined;
  const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
  return { end: i + m[0].length, unbounded: max === Infinity, repeats: max > 1 };
}

/** Refuses what RE2 lacks and the shapes that backtrack badly; returns the reason or undefined. */
function shapeProblem(p: string): string | undefined {
  const stack: Group[] = [];
  let wide = 0;
  let i = 0;
  // The atom just closed: whether it was a group with a quantifier inside, and whether it is "wide".
  let last: { group: boolean; quantifiedInside: boolean; wide: boolean } | undefined;
  while (i < p.length) {
    const c = p[i];
    if (c === '\\') {
      const n = p[i + 1] ?? '';
      if (/[1-9]/.test(n) || n === 'k') return 'backreferences are not supported (RE2, which Envoy uses, has none)';
      last = { group: false, quantifiedInside: false, wide: /[SDWs]/.test(n) };
      i += 2;
    } else if (c === '[') {
      let j = i + 1;
      if (p[j] === '^') j++;
      if (p[j] === ']') j++;
      while (j < p.length && p[j] !== ']') j += p[j] === '\\' ? 2 : 1;
      last = { group: false, quantifiedInside: false, wide: p[i + 1] === '^' };
      i = j + 1;
    } else if (c === '(') {
      if (p.startsWith('(?=', i) || p.startsWith('(?!', i) || p.startsWith('(?<=', i) || p.startsWith('(?<!', i))
        return 'lookahead and lookbehind are not supported (RE2, which Envoy uses, has none)';
      stack.push({ quantifiedInside: false });
      last = undefined;
      i += p.startsWith('(?:', i) ? 3 : p.startsWith('(?<', i) ? p.indexOf('>', i) + 1 || p.length : 1;
    } else if (c === ')') {
      const g = stack.pop();
      last = { group: true, quantifiedInside: g?.quantifiedInside ?? false, wide: false };
      i++;
    } else {
      const q = quantifierAt(p, i);
      if (q) {
        if (last?.group && last.quantifiedInside && q.repeats)
          return 'a repeated group that contains a repeat, e.g. (a+)+, can take exponential time; write it without the nesting';
        if (last?.wide && q.unbounded && ++wide > MAX_WIDE_REPEATS)
          return `more than ${MAX_WIDE_REPEATS} unbounded repeats of "any character" (.* or .+) make a near-miss cost n^${wide}; anchor on literals between them`;
        const top = stack[stack.length - 1];
        if (top && q.repeats) top.quantifiedInside = true;
        if (last?.group && last.quantifiedInside && top) top.quantifiedInside = true;
        last = undefined;
        i = q.end;
        if (p[i] === '?') i++; // lazy form: same cost
      } else {
        last = { group: false, quantifiedInside: false, wide: c === '.' };
        i++;
      }
    }
  }
  return undefined;
}

/**
 * Compiles a Gateway API regular expression as a full match (RE2's
 * FullMatch, as Envoy applies it), or says why it is refused.
 */
export function compileRouteRegex(pattern: string): RegexResult {
  if (pattern === '') return { ok: false, why: 'must not be empty' };
  const shape = shapeProblem(pattern);
  if (shape) return { ok: false, why: shape };
  try {
    return { ok: true, regex: new RegExp(`^(?:${pattern})$`) };
  } catch (err) {
    return { ok: false, why: `is not a valid regular expression: ${(err as Error).message}` };
  }
}

/** A full match of a compiled route regex, false for input past the bound. */
export const regexMatches = (re: RegExp, value: string): boolean => value.length <= MAX_REGEX_INPUT && re.test(value);
