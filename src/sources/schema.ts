// Unknown keys in the configuration are errors, not silence: a misspelt
// `polices:` would otherwise leave the mesh with no policy (allow-all), a
// misspelt `dataplan: sidecar` would leave a sidecar workload captured by its
// node. Each level of the YAML lists the keys it knows; a key outside the
// list is reported with its path and, when one is close, the key meant.

type Obj = Record<string, unknown>;
export type Report = (at: string, value: unknown, what: string) => void;

/** The keys of each level of the standalone YAML (Istio objects: see src/sources/istio-crd.ts). */
export const KEYS = {
  top: ['trustDomain', 'ca', 'nodes', 'namespaces', 'workloads', 'services', 'policies', 'routes', 'rootNamespace', 'controlPlane'],
  namespace: ['name', 'labels'],
  ca: ['dir'],
  node: ['name', 'address'],
  // authorizationPolicies is derived from the policies' selectors; it is known so that a Workload
  // written out as YAML reads back, and config.ts accepts it only empty.
  workload: [
    'uid',
    'name',
    'namespace',
    'serviceAccount',
    'node',
    'addresses',
    'protocol',
    'dataplane',
    'netns',
    'cgroup',
    'labels',
    'capacity',
    'authorizationPolicies',
  ],
  service: ['name', 'namespace', 'hostname', 'addresses', 'ports', 'selector', 'labels'],
  servicePort: ['port', 'targetPort', 'name', 'appProtocol'],
  controlPlane: ['tokens'],
  token: ['node', 'waypoint', 'sha256'],
} as const;

/** Edit distance counting a swap of neighbours as one edit (`dri` is one from `dir`), ignoring case. */
export function editDistance(a: string, b: string): number {
  const [s, t] = [a.toLowerCase(), b.toLowerCase()];
  // d[i][j]: the distance between the first i letters of s and the first j of t.
  const d = Array.from({ length: s.length + 1 }, (_, i) => Array.from({ length: t.length + 1 }, (_, j) => (i === 0 ? j : i)));
  // A cell outside the table is no path at all.
  const at = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (const [i, row] of d.entries()) {
    for (let j = 1; i > 0 && j <= t.length; j++) {
      const swapped = i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1];
      row[j] = Math.min(
        at(i - 1, j) + 1,
        at(i, j - 1) + 1,
        at(i - 1, j - 1) + (s[i - 1] === t[j - 1] ? 0 : 1),
        swapped ? at(i - 2, j - 2) + 1 : Number.POSITIVE_INFINITY,
      );
    }
  }
  return at(s.length, t.length);
}

/**
 * The known key a typo most likely meant: the nearest within a third of its
 * length (at least 1, at most 3 edits), a case-only difference first, a
 * clipped key counting as one edit. A
 * wild guess would mislead more than no guess.
 */
export function closest(key: string, known: readonly string[]): string | undefined {
  if (key.length > 64) return undefined; // not a typo of any key we have; spare the quadratic work
  let best: string | undefined;
  let bestD = Math.min(3, Math.max(1, Math.floor(key.length / 3))) + 1;
  for (const k of known) {
    const [lk, lc] = [key.toLowerCase(), k.toLowerCase()];
    // A clipped key (`sha` for `sha256`) is as good a guess as one typo.
    const d = lk === lc ? 0 : lk.length >= 3 && lc.startsWith(lk) ? 1 : editDistance(key, k);
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/** What to say about an unknown key: the key meant, or the keys this level takes. */
export function unknownKeyHint(key: string, known: readonly string[]): string {
  if (key === '<<') return 'YAML merge keys (<<) are not supported; write the fields out (anchors and aliases, &name and *name, work)';
  const near = closest(key, known);
  return near ? `unknown field; did you mean \`${near}\`?` : `unknown field; expected one of ${known.join(', ')}`;
}

/** A child path: `workloads[2]` + `dataplan` is `workloads[2].dataplan`; at the top, just the key. */
export const join = (at: string, key: string): string => (at ? `${at}.${key}` : key);

/** Reports every key of o that is not in known, each with its path and hint. */
export function checkKeys(report: Report, o: Obj, known: readonly string[], at: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) report(join(at, k), o[k], unknownKeyHint(k, known));
  }
}
