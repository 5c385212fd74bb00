// Linkerd's HTTPLocalRateLimitPolicy (policy.linkerd.io/v1alpha1) read into
// the waypoint's model (src/waypoint/types.ts). Linkerd attaches it to a
// Server (a pod port); ambit's waypoint serves services, so targetRef names
// a Service (group "", kind Service) and the limits apply to every request
// the waypoint receives for it. The rest is written as Linkerd users write
// it: spec.total, spec.identity and spec.overrides[] with clientRefs naming
// ServiceAccounts. Unknown fields are refused with the nearest known name.
import { type Service, serviceKey } from '../state/types';
import type { ClientAccount, RateLimitPolicy } from '../waypoint/types';
import { DNS, type Doc, type Known } from './k8s-doc';
import { closest } from './schema';

export const RATE_LIMIT_VERSIONS = ['policy.linkerd.io/v1alpha1'];

const SPEC = ['targetRef', 'total', 'identity', 'overrides'];
const TARGET = ['group', 'kind', 'name', 'namespace'];
const RATE = ['requestsPerSecond'];
const OVERRIDE = ['requestsPerSecond', 'clientRefs'];
const CLIENT = ['kind', 'name', 'namespace', 'group'];
/** A rate no client can reach through one waypoint; higher is a typo. */
const MAX_RPS = 1_000_000;

function rate(d: Doc, v: unknown, rel: string): number | undefined {
  const o = d.obj(v, rel, 'must be { requestsPerSecond: <n> }', RATE);
  if (!o) return undefined;
  const n = d.int(o, 'requestsPerSecond', rel, 1, MAX_RPS, 'requests per second allowed');
  if (o.requestsPerSecond === undefined) d.problem(`${rel}.requestsPerSecond`, undefined, `is required: a whole number 1..${MAX_RPS}`);
  return n;
}

function target(d: Doc, known: Known): Service | undefined {
  const o = d.obj(d.spec.targetRef, 'spec.targetRef', 'must be { group: "", kind: Service, name }', TARGET);
  if (!o) {
    if (d.spec.targetRef === undefined)
      d.problem('spec.targetRef', undefined, 'is required: { group: "", kind: Service, name: <service> }');
    return undefined;
  }
  if (o.kind === 'Server')
    d.problem(
      'spec.targetRef.kind',
      o.kind,
      'ambit\'s waypoint limits a service, not a Linkerd Server: write kind: Service and group: "" with the service\'s name',
    );
  else if (o.kind !== 'Service') d.problem('spec.targetRef.kind', o.kind, 'must be Service');
  if (o.group !== undefined && o.group !== '' && o.group !== 'core')
    d.problem('spec.targetRef.group', o.group, 'must be "" (the core group of Service) or left out');
  if (o.namespace !== undefined && o.namespace !== d.namespace)
    d.problem('spec.targetRef.namespace', o.namespace, `must be the policy's own namespace (${d.namespace}) or left out`);
  const name = d.str(o, 'name', 'spec.targetRef', 'the service to limit, e.g. reviews');
  if (!name || o.kind !== 'Service') return undefined;
  const svc = known.byName.get(`${d.namespace}/${name}`);
  if (!svc) {
    const near = closest(
      name,
      known.services.filter((s) => s.namespace === d.namespace).map((s) => s.name),
    );
    d.problem(
      'spec.targetRef.name',
      name,
      `names no known service${near ? ` (did you mean ${near}?)` : ''} (${known.namesIn(d.namespace)})`,
    );
  }
  return svc;
}

function clients(d: Doc, list: unknown[], rel: string): ClientAccount[] {
  if (list.length === 0) d.problem(rel, list, 'must list at least one { kind: ServiceAccount, name }');
  return list.flatMap((v, i): ClientAccount[] => {
    const at = `${rel}[${i}]`;
    const o = d.obj(v, at, 'must be { kind: ServiceAccount, name, namespace }', CLIENT);
    if (!o) return [];
    if (o.kind !== 'ServiceAccount')
      d.problem(`${at}.kind`, o.kind, 'must be ServiceAccount: overrides name clients by the account they run as');
    if (o.group !== undefined && o.group !== '' && o.group !== 'core') d.problem(`${at}.group`, o.group, 'must be "" or left out');
    const name = d.str(o, 'name', at, 'the client service account, e.g. web');
    const ns = o.namespace === undefined ? d.namespace : d.str(o, 'namespace', at, 'the namespace of the service account');
    if (name && !DNS.test(name)) d.problem(`${at}.name`, name, 'must be lower-case letters, digits, - and .');
    return name && ns ? [{ namespace: ns, name }] : [];
  });
}

/** One policy; undefined when it has problems. */
export function rateLimitPolicy(d: Doc, known: Known): RateLimitPolicy | undefined {
  const spec = d.obj(d.spec, 'spec', 'must be a map', SPEC) ?? {};
  const svc = target(d, known);
  const total = spec.total === undefined ? undefined : rate(d, spec.total, 'spec.total');
  const identity = spec.identity === undefined ? undefined : rate(d, spec.identity, 'spec.identity');
  const overrides = d.list(spec, 'overrides', 'spec').flatMap((v, i) => {
    const rel = `spec.overrides[${i}]`;
    const o = d.obj(v, rel, 'must be { requestsPerSecond, clientRefs }', OVERRIDE);
    if (!o) return [];
    const n = d.int(o, 'requestsPerSecond', rel, 1, MAX_RPS, 'requests per second the listed clients share');
    if (o.requestsPerSecond === undefined) d.problem(`${rel}.requestsPerSecond`, undefined, `is required: a whole number 1..${MAX_RPS}`);
    const cs = clients(d, d.list(o, 'clientRefs', rel), `${rel}.clientRefs`);
    return n === undefined ? [] : [{ requestsPerSecond: n, clients: cs }];
  });
  // After a misspelt field, that one problem says it: "limits nothing" would only repeat it.
  if (d.problems === 0 && spec.total === undefined && spec.identity === undefined && overrides.length === 0)
    d.problem('spec', d.spec, 'limits nothing: set total, identity or overrides (each { requestsPerSecond: <n> })');
  if (!svc || d.problems > 0) return undefined;
  return {
    namespace: d.namespace,
    name: d.name,
    service: serviceKey(svc),
    ...(total === undefined ? {} : { total }),
    ...(identity === undefined ? {} : { identity }),
    overrides,
  };
}

/** At most one policy per service: the first read applies; the others are ignored with a warning. */
export function onePolicyPerService(found: { policy: RateLimitPolicy; doc: Doc }[]): RateLimitPolicy[] {
  const chosen = new Map<string, RateLimitPolicy>();
  for (const { policy, doc } of found) {
    const first = chosen.get(policy.service);
    if (first)
      doc.warn('spec.targetRef', `ignored: HTTPLocalRateLimitPolicy ${first.namespace}/${first.name} already limits ${policy.service}`);
    else chosen.set(policy.service, policy);
  }
  return [...chosen.values()];
}
