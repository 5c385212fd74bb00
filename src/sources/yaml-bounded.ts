// YAML with bounds, for files an operator (or whoever can write them)
// controls: size, nesting depth and alias expansion are checked before a
// document becomes objects, so a wrong or hostile file is an AMBIT_E_CONFIG
// naming the limit, never an exhausted heap or stack.
import YAML, { isAlias, isMap, isPair, isScalar, isSeq } from 'yaml';
import { AmbitError } from '../errors';

/**
 * Largest file read (bytes). A 25,000-workload mesh written by
 * YAML.stringify is 5.3 MB; parsing costs about 75 bytes of memory per byte
 * of YAML (16 MB peaked at 1.2 GB RSS and took 16 s here), so 16 MiB leaves
 * room for three times that mesh while bounding what one parse can take.
 */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
/**
 * Deepest nesting of maps and lists. The deepest real path is about 10
 * levels (policies[i].spec.rules[j].from[k].source.principals[l]); the
 * parser's recursion ends in a stack overflow somewhere near 800.
 */
export const MAX_DEPTH = 64;
/**
 * Alias expansions (the yaml package's measure: uses of an anchor times the
 * nodes under it). Aliases share objects rather than copy them, but every
 * reader that walks the result walks each use: nine levels of nine aliases
 * (a "billion laughs") is 387 million entries to validate.
 */
export const MAX_ALIAS_COUNT = 100;

const MiB = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** The AMBIT_E_CONFIG for a source of `bytes`, over MAX_CONFIG_BYTES. */
export const oversizeError = (bytes: number, source: string): AmbitError =>
  new AmbitError(
    'AMBIT_E_CONFIG',
    `${source} is ${MiB(bytes)}, over the limit of ${MiB(MAX_CONFIG_BYTES)} (${MAX_CONFIG_BYTES} bytes)`,
    'is this the right file? a mesh this large belongs in Kubernetes mode (--kubernetes), not one YAML file',
  );

/** AMBIT_E_CONFIG when `bytes` is over MAX_CONFIG_BYTES. */
export function checkSize(bytes: number, source: string): void {
  if (bytes > MAX_CONFIG_BYTES) throw oversizeError(bytes, source);
}

/** The depth of the deepest collection, walked without recursion (the input decides the depth). */
function depthOf(root: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[root, 0]];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [node, depth] = top;
    if (isMap(node) || isSeq(node)) {
      const d = depth + 1;
      if (d > max) max = d;
      if (max > MAX_DEPTH) return max;
      for (const item of node.items) stack.push([item, d]);
    } else if (isPair(node)) {
      stack.push([node.key, depth], [node.value, depth]);
    } else if (!isScalar(node) && !isAlias(node) && node !== null && node !== undefined) {
      return Infinity; // a node kind this walk does not know: refuse rather than guess
    }
  }
  return max;
}

/**
 * Whether an alias sits inside its own anchor (`a: &x [*x]`), which makes the
 * data contain itself: every reader that walks it, or quotes it in an error,
 * would never finish. Iterative depth-first search; shared (aliased) parts
 * are fine, a way back to an open ancestor is not.
 */
function isCyclic(root: unknown): boolean {
  const open = new Set<object>();
  const done = new Set<object>();
  const stack: { node: object; leaving: boolean }[] = [];
  const visit = (v: unknown): boolean => {
    if (typeof v !== 'object' || v === null || done.has(v)) return false;
    if (open.has(v)) return true;
    open.add(v);
    stack.push({ node: v, leaving: true });
    for (const child of Object.values(v)) stack.push({ node: child as object, leaving: false });
    return false;
  };
  if (visit(root)) return true;
  for (let top = stack.pop(); top; top = stack.pop()) {
    const { node, leaving } = top;
    if (leaving) {
      open.delete(node);
      done.add(node);
      continue;
    }
    if (visit(node)) return true;
  }
  return false;
}

/** The one document in text, as plain data; AMBIT_E_CONFIG naming the source for every way it can fail. */
export function parseYamlBounded(text: string, source: string): unknown {
  checkSize(Buffer.byteLength(text, 'utf8'), source);
  const invalid = (what: string, hint?: string): AmbitError =>
    new AmbitError('AMBIT_E_CONFIG', `${source} is not valid YAML: ${what}`, hint);
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { uniqueKeys: true });
  } catch (err) {
    throw invalid((err as Error).message);
  }
  if (doc.errors.length > 0) {
    // The parser recurses per level and reports running out of stack as a parse error.
    if (doc.errors.some((e) => /call stack/i.test(e.message))) {
      throw invalid(
        `nested too deeply (limit ${MAX_DEPTH} levels of maps and lists)`,
        'flatten the file; a mesh configuration is about 10 levels deep',
      );
    }
    throw invalid(doc.errors.map((e) => e.message).join('; '));
  }
  const depth = depthOf(doc.contents);
  if (depth > MAX_DEPTH) {
    throw invalid(
      `nested deeper than ${MAX_DEPTH} levels of maps and lists`,
      'flatten the file; a mesh configuration is about 10 levels deep',
    );
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    if (err instanceof ReferenceError && /alias/i.test(err.message)) {
      throw invalid(
        `its aliases (*name) expand to more than ${MAX_ALIAS_COUNT} nodes, the limit that stops "billion laughs" documents`,
        'write repeated parts out, or alias smaller pieces',
      );
    }
    throw invalid((err as Error).message);
  }
  if (isCyclic(data))
    throw invalid(
      'an alias (*name) is inside its own anchor (&name), so the data would contain itself',
      'alias only parts that are complete where the alias appears',
    );
  return data;
}
