// Regular expressions from route matches run on every request, in
// JavaScript's backtracking engine, on input the client chooses. Envoy runs
// them in RE2 (linear time). Two defences: the source refuses patterns with
// what RE2 lacks or a shape known to backtrack badly (src/sources/
// gateway-api.ts, regexShapeProblem), and here the input a pattern sees is
// bounded, so the cost of one request is too (docs/waypoint.md, "Regular
// expressions", for the figures).

/** Longest value a route regular expression is run on; a longer value does not match. */
export const MAX_REGEX_INPUT = 4096;

/** A full match of a compiled route regex (the source anchors it), false for input past the bound. */
export const regexMatches = (re: RegExp, value: string): boolean => value.length <= MAX_REGEX_INPUT && re.test(value);
