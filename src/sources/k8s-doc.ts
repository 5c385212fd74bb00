// Reading Kubernetes objects given as parsed YAML (Gateway API routes and
// gateways, Istio policies, namespace and service labels): one document at
// a time, every problem reported with the object (kind namespace/name), the
// field path, the value and the fix, and unknown fields refused (a misspelt
// field must not change what is routed or allowed).
import type { StringMatch } from '../policy/types';
import type { Service } from '../state/types';
import { compileRouteRegex } from './route-regex';
import { type Report, unknownKeyHint } from './schema';

export type Obj = Record<string, unknown>;

export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const DNS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** An HTTP header name (RFC 9110 token); HTTP/2 pseudo-headers (":path") are not. */
export const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Kubernetes ObjectMeta (clusterName: before 1.25), so objects exported from a cluster (kubectl get -o yaml) load as they are. */
export const METADATA = [
  'name',
  'namespace',
  'generateName',
  'labels',
  'annotations',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'ownerReferences',
  'finalizers',
  'managedFields',
  'selfLink',
  'clusterName',
];

/**
 * Istio's string match: "*" is presence, a leading or trailing * a suffix
 * or prefix match; a * elsewhere is a problem (Istio refuses it too).
 * `lower` folds the value (hosts compare without case).
 */
export function wildcard(
  d: { problem(at: string, value: unknown, what: string): void },
  s: string,
  at: string,
  lower = false,
): StringMatch[] {
  const v = lower ? s.toLowerCase() : s;
  if (v === '*') return [{ presence: true }];
  const inner = v.startsWith('*') ? v.slice(1) : v.endsWith('*') ? v.slice(0, -1) : v;
  if (inner.includes('*')) {
    d.problem(at, s, 'Istio allows * only at the start or the end, e.g. "cluster.local/ns/foo/*", /api/* or *.png');
    return [];
  }
  return [v.startsWith('*') ? { suffix: inner } : v.endsWith('*') ? { prefix: inner } : { exact: v }];
}

/** One Kubernetes object being read: where it is, for problems (with kind namespace/name) and warnings. */
export class Doc {
  problems = 0;
  kind = '';
  name = '';
  namespace = '';
  created = '';
  labels: Record<string, string> = {};
  annotations: Obj = {};
  spec: Obj = {};

  constructor(
    readonly at: string,
    readonly order: number,
    private readonly report: Report,
    private readonly warnings: string[],
  ) {}

  get label(): string {
    return this.name ? `${this.at} (${this.kind} ${this.namespace}/${this.name})` : this.at;
  }
  problem(rel: string, value: unknown, what: string): void {
    this.problems++;
    this.report(rel ? `${this.label} ${rel}` : this.label, value, what);
  }
  warn(rel: string, what: string): void {
    this.warnings.push(`${this.label} ${rel}: ${what}`);
  }

  /** A map (unknown keys reported when `keys` is given), or undefined when absent or not a map. */
  obj(v: unknown, rel: string, what: string, keys?: readonly string[]): Obj | undefined {
    if (v === undefined || v === null) return undefined;
    if (!isObj(v)) {
      this.problem(rel, v, what);
      return undefined;
    }
    if (keys) for (const k of Object.keys(v)) if (!keys.includes(k)) this.problem(`${rel}.${k}`, v[k], unknownKeyHint(k, keys));
    return v;
  }

  list(o: Obj, key: string, rel: string): unknown[] {
    const v = o[key];
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.problem(`${rel}.${key}`, v, 'must be a list');
    return [];
  }

  str(o: Obj, key: string, rel: string, fix: string, optional = false): string | undefined {
    const v = o[key];
    if (v === undefined && optional) return undefined;
    if (typeof v === 'string' && v !== '') return v;
    this.problem(`${rel}.${key}`, v, `must be a non-empty string: ${fix}`);
    return undefined;
  }

  int(o: Obj, key: string, rel: string, min: number, max: number, fix: string): number | undefined {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    this.problem(`${rel}.${key}`, v, `must be a whole number ${min}..${max}: ${fix}`);
    return undefined;
  }

  strings(o: Obj, key: string, rel: string): string[] {
    return this.list(o, key, rel).flatMap((s, i) => {
      if (typeof s === 'string' && s !== '') return [s];
      if (typeof s === 'number' && Number.isFinite(s)) return [String(s)];
      this.problem(`${rel}.${key}[${i}]`, s, 'must be a non-empty string');
      return [];
    });
  }

  regex(pattern: string, rel: string): RegExp | undefined {
    const r = compileRouteRegex(pattern);
    if ('regex' in r) return r.regex;
    this.problem(rel, pattern, r.why);
    return undefined;
  }
}

/** kind → the apiVersions accepted for it. */
export type Kinds = Readonly<Record<string, readonly string[]>>;

/**
 * Reads an object's apiVersion, kind and metadata (every field Kubernetes
 * defines is accepted, so `kubectl get -o yaml` output loads); undefined,
 * with the problems reported, when they are not usable.
 */
export function readObject(raw: unknown, at: string, order: number, kinds: Kinds, report: Report, warnings: string[]): Doc | undefined {
  const d = new Doc(at, order, report, warnings);
  const o = d.obj(raw, '', 'must be a Kubernetes object with apiVersion, kind, metadata and spec', [
    'apiVersion',
    'kind',
    'metadata',
    'spec',
    'status',
  ]);
  if (!o) {
    if (raw === undefined || raw === null) d.problem('', raw, 'must be a Kubernetes object with apiVersion, kind, metadata and spec');
    return undefined;
  }
  const versions = typeof o.kind === 'string' ? kinds[o.kind] : undefined;
  if (!versions) {
    d.problem('kind', o.kind, `must be one of ${Object.keys(kinds).join(', ')}`);
    return undefined;
  }
  d.kind = o.kind as string;
  if (!versions.includes(o.apiVersion as string)) d.problem('apiVersion', o.apiVersion, `must be ${versions.join(' or ')} for ${d.kind}`);
  const meta = d.obj(o.metadata, 'metadata', 'must be a map with name and namespace', METADATA) ?? {};
  for (const k of ['name', 'namespace'] as const) {
    const v = meta[k];
    if (typeof v === 'string' && DNS.test(v)) d[k] = v;
    else if (!(k === 'namespace' && d.kind === 'Namespace'))
      d.problem(`metadata.${k}`, v, 'is required: lower-case letters, digits, - and . (e.g. default)');
  }
  if (d.kind === 'Namespace') d.namespace = d.name;
  d.created = typeof meta.creationTimestamp === 'string' ? meta.creationTimestamp : '';
  const labels = d.obj(meta.labels, 'metadata.labels', 'must be a map of string to string') ?? {};
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v === 'string') d.labels[k] = v;
    else d.problem(`metadata.labels.${k}`, v, 'label values must be strings');
  }
  d.annotations = d.obj(meta.annotations, 'metadata.annotations', 'must be a map of string to string') ?? {};
  d.spec = isObj(o.spec) ? o.spec : {};
  if (o.spec !== undefined && !isObj(o.spec)) d.problem('spec', o.spec, 'must be a map');
  return d.problems === 0 ? d : undefined;
}

/** The services of the mesh model that objects refer to by namespace and name. */
export class Known {
  readonly byName = new Map<string, Service>();
  constructor(readonly services: readonly Service[]) {
    for (const s of services) this.byName.set(`${s.namespace}/${s.name}`, s);
  }
  namesIn(ns: string): string {
    const names = this.services.filter((s) => s.namespace === ns).map((s) => s.name);
    return names.length ? `services in ${ns}: ${names.sort().join(', ')}` : `no service is known in namespace ${ns}`;
  }
}
