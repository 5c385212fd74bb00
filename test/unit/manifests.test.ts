// daemonset/ cannot be applied to a cluster on the development machine, so
// it is checked here instead:
//  - every document of every file kustomization.yaml lists (and the base and
//    the Vagrant overlay as kustomize renders them) validates against the
//    Kubernetes API schemas of kubernetes-models (Kubernetes 1.33.0), with
//    unknown fields rejected as `kubectl apply` (strict field validation)
//    rejects them — and deliberately broken copies fail;
//  - what no schema sees: references between the objects, the agent's
//    arguments (the CLI contract), its privileges, and that the Dockerfile's
//    image holds what the manifests run.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import YAML from 'yaml';
import { membersFileOf } from '../../src/cni/protocol';
import { DEFAULT_OBJ_DIR } from '../../src/datapath/loader';
import { PROTO_DIR } from '../../src/protocol/protos';
import { parseConfig } from '../../src/sources/config';
import { at, must } from '../helpers/must';

/** A parsed manifest, walked by field name as the API server would; the assertions are its schema. */
// biome-ignore lint/suspicious/noExplicitAny: manifests are read as free-form YAML; typing every Kubernetes kind here would restate kubernetes-models.
type Doc = any;

const ROOT = path.resolve(__dirname, '../../..');
const BASE = path.join(ROOT, 'daemonset');
const OVERLAY = path.join(BASE, 'overlays/vagrant');
const NAMESPACE = 'ambit-system';
/** Created by the operator (daemonset/README.md), never by `kubectl apply -k`. */
const OPERATOR_CREATED = { configMaps: ['ambit-ca-root'], secrets: ['ambit-ca'] };
const ENTRYPOINT = ['node', '/app/dist/src/cli/main.js'];

// The Kubernetes-facing command line of the agent and the control plane.
const NODE_ARGS = [
  'node',
  '--xds',
  'ambit-control-plane.ambit-system.svc:15012',
  '--xds-root',
  '/var/run/ambit/ca-root/root-cert.pem',
  '--xds-token',
  '/var/run/secrets/tokens/istio-ca-token',
  '--node',
  '$(NODE_NAME)',
  '--kubernetes',
  '--proc',
  '/host/proc',
  '--pods-cgroup',
  '/sys/fs/cgroup',
  '--cni-socket',
  '/var/lib/ambit/cni/cni.sock',
];
const CONTROL_PLANE_ARGS = ['control-plane', '--kubernetes', '--config', '/etc/ambit/mesh.yaml', '--listen', '0.0.0.0:15012'];
const NODE_CAPABILITIES = ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'NET_RAW', 'SYS_PTRACE', 'SYS_RESOURCE'];
const DRAIN_SECONDS = 25; // `ambit node --drain-seconds` default

// ---------------------------------------------------------------- YAML

/** Kubernetes reads YAML 1.1 (sigs.k8s.io/yaml), this repository's tools 1.2: a scalar both must read alike. */
function parseDocs(file: string, text = fs.readFileSync(file, 'utf8')): Doc[] {
  const read = (version: '1.1' | '1.2'): Doc[] =>
    YAML.parseAllDocuments(text, { version })
      .map((d, i) => {
        assert.equal(
          d.errors.length,
          0,
          `${path.relative(ROOT, file)} document ${i + 1} (YAML ${version}): ${d.errors.map((e) => e.message).join('; ')}`,
        );
        return d.toJS();
      })
      .filter((d) => d !== null);
  const docs = read('1.2');
  assert.deepEqual(
    read('1.1'),
    docs,
    `${path.relative(ROOT, file)} reads differently as YAML 1.1 (Kubernetes) and 1.2: quote the ambiguous scalars`,
  );
  return docs;
}

const clone = <T>(v: T): T => structuredClone(v);

// ---------------------------------------------------------------- schemas

const MODELS: Record<string, { prototype: { validate(): void } }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Service': Service,
  'v1/Pod': Pod,
  'apps/v1/DaemonSet': DaemonSet,
  'apps/v1/Deployment': Deployment,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
};
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);

/**
 * Wraps a document so that every field the schema's validator reads is
 * recorded. kubernetes-models compiles the OpenAPI schemas, which do not say
 * `additionalProperties: false`, so its validators never read a field the
 * schema does not define (maps such as labels and data are read key by key):
 * a field nobody read is one the API server's strict field validation (the
 * default of `kubectl apply` since 1.27) rejects as unknown.
 */
function readTracker(): { wrap: (v: Doc) => Doc; unread: () => string[] } {
  const proxies = new WeakMap<object, object>();
  const reads = new Map<object, { at: string; keys: Set<string> }>();
  const wrap = (v: Doc, at: string): Doc => {
    if (v === null || typeof v !== 'object') return v;
    const known = proxies.get(v);
    if (known) return known;
    const keys = new Set<string>();
    reads.set(v, { at, keys });
    const proxy = new Proxy(v, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (typeof key !== 'string' || !Object.hasOwn(target, key)) return value;
        keys.add(key);
        return wrap(value, `${at}/${key}`);
      },
    });
    proxies.set(v, proxy);
    return proxy;
  };
  const unread = (): string[] =>
    [...reads].flatMap(([obj, { at, keys }]) =>
      Array.isArray(obj)
        ? []
        : Object.keys(obj)
            .filter((k) => !keys.has(k))
            .map((k) => `${at}/${k}`),
    );
  return { wrap: (v) => wrap(v, ''), unread };
}

const DNS1123_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

function podSpecs(doc: Doc): { at: string; spec: Doc; meta: Doc }[] {
  if (doc?.kind === 'Pod') return [{ at: '/spec', spec: doc.spec, meta: doc.metadata }];
  if (doc?.spec?.template) return [{ at: '/spec/template/spec', spec: doc.spec.template.spec, meta: doc.spec.template.metadata }];
  return [];
}
const containersOf = (spec: Doc): Doc[] => [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];

/** Rules of the API server's validation that the OpenAPI schema does not carry (the ones these manifests can break). */
function apiServerRules(doc: Doc): string[] {
  const errors: string[] = [];
  const name = doc?.metadata?.name;
  if (typeof name !== 'string' || !DNS1123_SUBDOMAIN.test(name))
    errors.push(`/metadata/name: ${JSON.stringify(name)} is not a DNS-1123 subdomain`);
  const labels = (at: string, l: Doc): void => {
    for (const [k, v] of Object.entries(l ?? {})) {
      if (!LABEL_KEY.test(k)) errors.push(`${at}: label key ${JSON.stringify(k)} is invalid`);
      if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v))
        errors.push(`${at}/${k}: label value ${JSON.stringify(v)} is invalid`);
    }
  };
  labels('/metadata/labels', doc?.metadata?.labels);
  for (const { at, spec, meta } of podSpecs(doc)) {
    labels(`${at}/../metadata/labels`, meta?.labels);
    for (const c of containersOf(spec)) {
      for (const p of c.ports ?? [])
        if (p.name !== undefined && !IANA_SVC_NAME.test(p.name))
          errors.push(`${at}: port name ${JSON.stringify(p.name)} is not an IANA service name (≤ 15 characters)`);
      const sc = c.securityContext ?? {};
      if (sc.allowPrivilegeEscalation === false && sc.privileged === true)
        errors.push(`${at}: allowPrivilegeEscalation false with privileged true`);
      if (sc.allowPrivilegeEscalation === false && (sc.capabilities?.add ?? []).includes('CAP_SYS_ADMIN'))
        errors.push(`${at}: allowPrivilegeEscalation false with CAP_SYS_ADMIN`);
      for (const m of c.volumeMounts ?? [])
        if (m.mountPropagation === 'Bidirectional' && sc.privileged !== true)
          errors.push(`${at}: Bidirectional mount propagation needs a privileged container`);
    }
    if (spec?.hostNetwork !== true) continue;
    for (const c of containersOf(spec))
      for (const p of c.ports ?? []) {
        if (p.hostPort !== undefined && p.hostPort !== p.containerPort)
          errors.push(`${at}: with hostNetwork, hostPort must equal containerPort`);
      }
  }
  if (doc?.kind === 'Service')
    for (const p of doc.spec?.ports ?? [])
      if (p.name !== undefined && !IANA_SVC_NAME.test(p.name))
        errors.push(`/spec/ports: name ${JSON.stringify(p.name)} is not an IANA service name`);
  return errors;
}

/** Every reason a document would be refused by `kubectl apply` that we can see without a cluster. */
function validate(doc: Doc): string[] {
  const model = MODELS[`${doc?.apiVersion}/${doc?.kind}`];
  if (!model)
    return [
      `no schema for apiVersion ${JSON.stringify(doc?.apiVersion)} kind ${JSON.stringify(doc?.kind)}: add its kubernetes-models class to MODELS`,
    ];
  const errors: string[] = [];
  const t = readTracker();
  try {
    model.prototype.validate.call(t.wrap(doc));
  } catch (err) {
    errors.push((err as Error).message);
  }
  for (const at of t.unread()) errors.push(`${at}: unknown field`);
  return [...errors, ...apiServerRules(doc)];
}

// ---------------------------------------------------------------- kustomize

interface Kustomization {
  apiVersion: string;
  kind: string;
  namespace?: string;
  resources: string[];
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }[];
  images?: { name: string; newName?: string; newTag?: string }[];
  patches?: { target: { group?: string; version?: string; kind: string; name: string }; patch: string }[];
}

function readKustomization(dir: string): Kustomization {
  const [k] = parseDocs(path.join(dir, 'kustomization.yaml'));
  const known = ['apiVersion', 'kind', 'namespace', 'resources', 'labels', 'images', 'patches'];
  for (const key of Object.keys(k))
    assert.ok(
      known.includes(key),
      `${path.relative(ROOT, dir)}/kustomization.yaml: ${key} is not rendered by this test; teach render() about it`,
    );
  assert.equal(k.apiVersion, 'kustomize.config.k8s.io/v1beta1');
  assert.equal(k.kind, 'Kustomization');
  assert.ok(Array.isArray(k.resources) && k.resources.length > 0, 'resources: a non-empty list');
  return k as Kustomization;
}

const imageName = (image: string): { name: string; tag?: string } => {
  const [ref = ''] = image.split('@');
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? { name: ref.slice(0, colon), tag: ref.slice(colon + 1) } : { name: ref };
};

function jsonPatch(doc: Doc, ops: Doc[], where: string): void {
  for (const op of ops) {
    const parts = String(op.path)
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = must(parts.pop(), `${where}: ${op.op} ${op.path}: a path`);
    let parent = doc;
    for (const p of parts) {
      parent = parent?.[Array.isArray(parent) ? Number(p) : p];
      assert.ok(parent !== undefined && parent !== null, `${where}: ${op.op} ${op.path}: no such path`);
    }
    if (op.op === 'replace' || op.op === 'remove') {
      assert.ok(
        Array.isArray(parent) ? Number(last) < parent.length : Object.hasOwn(parent, last),
        `${where}: ${op.op} ${op.path}: no such field`,
      );
    }
    if (op.op === 'remove') {
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
    } else if (op.op === 'add' && Array.isArray(parent)) {
      parent.splice(last === '-' ? parent.length : Number(last), 0, clone(op.value));
    } else if (op.op === 'add' || op.op === 'replace') {
      parent[Array.isArray(parent) ? Number(last) : last] = clone(op.value);
    } else {
      assert.fail(`${where}: JSON patch op ${op.op} is not rendered by this test`);
    }
  }
}

interface Rendered {
  doc: Doc;
  from: string;
}

/** What `kubectl apply -k DIR` sends, for the kustomize features these manifests use. */
function render(dir: string): Rendered[] {
  const k = readKustomization(dir);
  let out: Rendered[] = [];
  for (const r of k.resources) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) out.push(...render(p));
    else out.push(...parseDocs(p).map((doc) => ({ doc, from: path.relative(ROOT, p) })));
  }
  out = out.map((r) => ({ ...r, doc: clone(r.doc) }));
  for (const { doc } of out) {
    if (k.namespace) {
      if (!CLUSTER_SCOPED.has(doc.kind)) doc.metadata.namespace = k.namespace;
      if (doc.kind === 'Namespace')
        assert.equal(doc.metadata.name, k.namespace, 'the Namespace object must be the kustomization namespace');
      for (const s of doc.subjects ?? []) if (s.kind === 'ServiceAccount') s.namespace = k.namespace;
    }
    for (const l of k.labels ?? []) {
      doc.metadata.labels = { ...doc.metadata.labels, ...l.pairs };
      if (l.includeTemplates || l.includeSelectors) for (const { meta } of podSpecs(doc)) meta.labels = { ...meta.labels, ...l.pairs };
      if (l.includeSelectors) assert.fail('includeSelectors would change immutable selectors: not used here');
    }
    for (const img of k.images ?? []) {
      for (const { spec } of podSpecs(doc)) {
        for (const c of containersOf(spec)) {
          const { name, tag } = imageName(c.image);
          if (name !== img.name) continue;
          const newTag = img.newTag ?? tag;
          c.image = `${img.newName ?? name}${newTag ? `:${newTag}` : ''}`;
        }
      }
    }
    for (const p of k.patches ?? []) {
      const t = p.target;
      const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : ['', doc.apiVersion];
      if (
        t.kind !== doc.kind ||
        t.name !== doc.metadata.name ||
        (t.group !== undefined && t.group !== group) ||
        (t.version !== undefined && t.version !== version)
      )
        continue;
      jsonPatch(doc, YAML.parse(p.patch), `${path.relative(ROOT, dir)} patch of ${t.kind}/${t.name}`);
    }
  }
  for (const p of k.patches ?? []) {
    assert.ok(
      out.some(({ doc }) => doc.kind === p.target.kind && doc.metadata.name === p.target.name),
      `${path.relative(ROOT, dir)}: the patch target ${p.target.kind}/${p.target.name} matches nothing`,
    );
  }
  for (const img of k.images ?? []) {
    assert.ok(
      out.some(({ doc }) => podSpecs(doc).some(({ spec }) => containersOf(spec).some((c) => c.image.startsWith(img.newName ?? img.name)))),
      `${path.relative(ROOT, dir)}: images entry ${img.name} matches no container`,
    );
  }
  return out;
}

// ---------------------------------------------------------------- the manifests

const baseFiles = (): string[] => readKustomization(BASE).resources.map((r) => path.join(BASE, r));
const rendered = (): Rendered[] => render(BASE);
const find = (docs: Rendered[], kind: string, name: string): Doc => {
  const hit = docs.filter(({ doc }) => doc.kind === kind && doc.metadata?.name === name);
  assert.equal(hit.length, 1, `exactly one ${kind} ${name}`);
  return at(hit, 0, `${kind} ${name}`).doc;
};
const agent = (docs = rendered()): Doc => find(docs, 'DaemonSet', 'ambit-node');
const controlPlane = (docs = rendered()): Doc => find(docs, 'Deployment', 'ambit-control-plane');
/** The one long-running container (the agent has an init container besides: see initContainer). */
const onlyContainer = (workload: Doc): Doc => {
  assert.equal(workload.spec.template.spec.containers.length, 1, `${workload.metadata.name}: one container`);
  return workload.spec.template.spec.containers[0];
};
/** The agent's one init container, install-cni. */
const initContainer = (workload: Doc): Doc => {
  const init = workload.spec.template.spec.initContainers ?? [];
  assert.deepEqual(
    init.map((c: Doc) => c.name),
    ['install-cni'],
    `${workload.metadata.name}: one init container`,
  );
  return init[0];
};
/** Where a volume is mounted in a container, or undefined. */
const mountOf = (workload: Doc, volume: string): Doc => onlyContainer(workload).volumeMounts?.find((m: Doc) => m.name === volume);
const volumeOf = (workload: Doc, pred: (v: Doc) => boolean): Doc => workload.spec.template.spec.volumes.find(pred);
const argAfter = (args: string[], flag: string): string => {
  const i = args.indexOf(flag);
  return must(i >= 0 ? args[i + 1] : undefined, `${flag} VALUE in the arguments`);
};

test('kustomization.yaml lists exactly the YAML files of daemonset/, the overlay builds on the base', () => {
  const files = fs
    .readdirSync(BASE)
    .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
    .sort();
  assert.deepEqual([...readKustomization(BASE).resources].sort(), files);
  const overlay = readKustomization(OVERLAY);
  assert.deepEqual(
    overlay.resources.map((r) => path.resolve(OVERLAY, r)),
    [BASE],
  );
  assert.deepEqual(
    fs.readdirSync(OVERLAY).filter((f) => /\.ya?ml$/.test(f)),
    ['kustomization.yaml'],
    'the overlay has no files of its own to list',
  );
  const base = readKustomization(BASE);
  assert.equal(base.namespace, NAMESPACE);
  assert.deepEqual(base.labels, [{ pairs: { 'app.kubernetes.io/part-of': 'ambit' }, includeSelectors: false, includeTemplates: true }]);
  assert.deepEqual(base.images, [{ name: 'ambit', newName: 'ghcr.io/ambit-mesh/ambit', newTag: '0.1.0' }]);
});

test('every document of every listed file validates against the Kubernetes 1.33 schemas (unknown fields included)', () => {
  let count = 0;
  for (const file of baseFiles()) {
    const docs = parseDocs(file);
    assert.ok(docs.length > 0, `${path.relative(ROOT, file)}: no documents`);
    docs.forEach((doc, i) => {
      assert.deepEqual(validate(doc), [], `${path.relative(ROOT, file)} document ${i + 1} (${doc?.kind} ${doc?.metadata?.name})`);
      if (!CLUSTER_SCOPED.has(doc.kind))
        assert.equal(
          doc.metadata.namespace,
          NAMESPACE,
          `${doc.kind} ${doc.metadata.name}: namespace ${NAMESPACE} in the file too (kubectl apply -f works alike)`,
        );
      count++;
    });
  }
  assert.ok(count >= 11, `all documents seen (${count})`);
});

test('the base and the Vagrant overlay, as kustomize renders them, validate too', () => {
  for (const [dir, image, policy] of [
    [BASE, 'ghcr.io/ambit-mesh/ambit:0.1.0', 'IfNotPresent'],
    [OVERLAY, 'ambit:dev', 'Never'],
  ] as const) {
    const docs = render(dir);
    const names = docs.map(({ doc }) => `${doc.kind}/${doc.metadata.name}`);
    assert.equal(new Set(names).size, names.length, `${path.relative(ROOT, dir)}: no two objects alike (${names.join(', ')})`);
    for (const { doc, from } of docs) {
      assert.deepEqual(validate(doc), [], `${path.relative(ROOT, dir)}: ${doc.kind} ${doc.metadata.name} (from ${from})`);
      assert.equal(doc.metadata.labels?.['app.kubernetes.io/part-of'], 'ambit');
    }
    for (const w of [agent(docs), controlPlane(docs)]) {
      for (const c of containersOf(w.spec.template.spec)) {
        assert.equal(c.image, image, `${path.relative(ROOT, dir)}: ${w.metadata.name}/${c.name} image`);
        assert.equal(c.imagePullPolicy, policy, `${path.relative(ROOT, dir)}: ${w.metadata.name}/${c.name} imagePullPolicy`);
      }
      assert.equal(w.spec.template.metadata.labels['app.kubernetes.io/part-of'], 'ambit');
    }
  }
});

test('broken copies fail validation: a string port, an unknown field, a missing required field, a bad enum, a bad name', () => {
  const ds = (): Doc => clone(agent());
  const expectInvalid = (what: string, doc: Doc, pattern: RegExp): void => {
    const errors = validate(doc);
    assert.ok(
      errors.some((e) => pattern.test(e)),
      `${what}: expected an error matching ${pattern}, got ${JSON.stringify(errors)}`,
    );
  };
  assert.deepEqual(validate(ds()), [], 'the unbroken copy is valid');

  let d = ds();
  onlyContainer(d).ports[0].containerPort = '15020';
  expectInvalid('containerPort as a string', d, /ports\/0\/containerPort must be integer/);

  d = ds();
  onlyContainer(d).securityContext.capabilitiesAdd = ['BPF'];
  expectInvalid('an unknown field in a container', d, /securityContext\/capabilitiesAdd: unknown field/);

  d = ds();
  d.spec.template.spec.hostNetwork = 'true';
  expectInvalid('a boolean as a string', d, /hostNetwork must be boolean/);

  d = ds();
  delete onlyContainer(d).name;
  expectInvalid('a container without its name', d, /must have required property '?name'?/);

  d = ds();
  delete d.spec.selector;
  expectInvalid('a DaemonSet without its selector', d, /must have required property '?selector'?/);

  d = ds();
  onlyContainer(d).imagePullPolicy = 'Sometimes';
  expectInvalid('an imagePullPolicy outside the enum', d, /imagePullPolicy must be equal to one of the allowed values/);

  d = ds();
  onlyContainer(d).ports[0].name = 'prometheus-metrics';
  expectInvalid('a port name longer than 15 characters', d, /not an IANA service name/);

  d = ds();
  onlyContainer(d).securityContext.privileged = true;
  expectInvalid('privileged with allowPrivilegeEscalation false', d, /allowPrivilegeEscalation false with privileged true/);

  const cm = clone(find(rendered(), 'ConfigMap', 'ambit-config'));
  cm.date = cm.data;
  expectInvalid('a misspelt top-level field', cm, /^\/date: unknown field/);

  const role = clone(find(rendered(), 'ClusterRole', 'ambit-node'));
  role.rules[0].verbs = 'get';
  expectInvalid('verbs as a string', role, /rules\/0\/verbs must be array/);

  const svc = clone(find(rendered(), 'Service', 'ambit-control-plane'));
  svc.metadata.name = 'Ambit_Control_Plane';
  expectInvalid('a name that is not DNS-1123', svc, /not a DNS-1123 subdomain/);

  expectInvalid('a kind without a schema', { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }, /no schema/);

  assert.throws(() => parseDocs('broken.yaml', 'a: [1, 2\n'), /broken\.yaml document 1/);
  assert.throws(() => parseDocs('ambiguous.yaml', 'mode: 0440\nflag: yes\n'), /reads differently as YAML 1\.1/);
});

test('every ConfigMap, Secret, ServiceAccount, ClusterRole and volume referenced exists; the operator-created ones are documented', () => {
  const docs = rendered();
  const has = (kind: string, name: string): boolean => docs.some(({ doc }) => doc.kind === kind && doc.metadata.name === name);
  const readme = fs.readFileSync(path.join(BASE, 'README.md'), 'utf8');
  const refs: { kind: string; name: string; by: string }[] = [];
  for (const { doc } of docs) {
    const by = `${doc.kind}/${doc.metadata.name}`;
    for (const { spec } of podSpecs(doc)) {
      refs.push({ kind: 'ServiceAccount', name: spec.serviceAccountName ?? 'default', by });
      const volumes = new Set<string>();
      for (const v of spec.volumes ?? []) {
        volumes.add(v.name);
        if (v.configMap) refs.push({ kind: 'ConfigMap', name: v.configMap.name, by });
        if (v.secret) refs.push({ kind: 'Secret', name: v.secret.secretName, by });
        for (const s of v.projected?.sources ?? []) {
          if (s.configMap) refs.push({ kind: 'ConfigMap', name: s.configMap.name, by });
          if (s.secret) refs.push({ kind: 'Secret', name: s.secret.name, by });
        }
      }
      const mounted = new Set<string>();
      for (const c of containersOf(spec)) {
        for (const m of c.volumeMounts ?? []) {
          assert.ok(volumes.has(m.name), `${by}: volumeMount ${m.name} names no volume`);
          mounted.add(m.name);
        }
        for (const e of c.env ?? []) {
          if (e.valueFrom?.configMapKeyRef) refs.push({ kind: 'ConfigMap', name: e.valueFrom.configMapKeyRef.name, by });
          if (e.valueFrom?.secretKeyRef) refs.push({ kind: 'Secret', name: e.valueFrom.secretKeyRef.name, by });
        }
        for (const e of c.envFrom ?? []) {
          if (e.configMapRef) refs.push({ kind: 'ConfigMap', name: e.configMapRef.name, by });
          if (e.secretRef) refs.push({ kind: 'Secret', name: e.secretRef.name, by });
        }
      }
      assert.deepEqual(
        [...volumes].filter((v) => !mounted.has(v)),
        [],
        `${by}: every volume is mounted`,
      );
    }
    if (doc.roleRef) refs.push({ kind: doc.roleRef.kind, name: doc.roleRef.name, by });
    for (const s of doc.subjects ?? []) {
      assert.equal(s.kind, 'ServiceAccount', `${by}: subjects are our service accounts`);
      assert.equal(s.namespace, NAMESPACE);
      refs.push({ kind: 'ServiceAccount', name: s.name, by });
    }
  }
  assert.ok(refs.length >= 8, 'references found');
  for (const r of refs) {
    const operator =
      (r.kind === 'ConfigMap' && OPERATOR_CREATED.configMaps.includes(r.name)) ||
      (r.kind === 'Secret' && OPERATOR_CREATED.secrets.includes(r.name));
    if (operator) {
      assert.equal(has(r.kind, r.name), false, `${r.kind} ${r.name} is the operator's: kubectl apply -k must never replace a CA`);
      continue;
    }
    assert.ok(has(r.kind, r.name), `${r.by} references ${r.kind} ${r.name}, which is not in the base`);
  }
  for (const name of [...OPERATOR_CREATED.configMaps, ...OPERATOR_CREATED.secrets]) {
    assert.ok(
      refs.some((r) => r.name === name),
      `${name} is referenced`,
    );
  }
  // The commands that create them, as the brief of the base says.
  for (const command of [
    'ambit ca init --dir ca',
    'kubectl -n ambit-system create secret generic ambit-ca --from-file=ca/',
    'kubectl -n ambit-system create configmap ambit-ca-root --from-file=root-cert.pem=ca/root-cert.pem',
    'kubectl apply -k daemonset/',
    'kubectl label namespace NAMESPACE ambit.dev/mode=ambient',
  ])
    assert.ok(readme.includes(command), `daemonset/README.md shows: ${command}`);
  assert.match(readme, /[Nn]ot applied to a real cluster on the development machine/);

  // Selectors select their own pods; the Service reaches the control plane's named port.
  for (const w of [agent(docs), controlPlane(docs)]) {
    for (const [k, v] of Object.entries(w.spec.selector.matchLabels))
      assert.equal(w.spec.template.metadata.labels[k], v, `${w.metadata.name}: selector ${k}`);
  }
  const svc = find(docs, 'Service', 'ambit-control-plane');
  const cp = controlPlane(docs);
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(cp.spec.template.metadata.labels[k], v, `Service selector ${k}`);
  assert.deepEqual(svc.spec.ports, [{ name: 'grpc-xds', port: 15012, targetPort: 'grpc-xds', protocol: 'TCP', appProtocol: 'grpc' }]);
  assert.ok(
    onlyContainer(cp).ports.some((p: Doc) => p.name === 'grpc-xds' && p.containerPort === 15012),
    'the control plane names its port grpc-xds',
  );
  assert.equal(
    argAfter(NODE_ARGS, '--xds'),
    `${svc.metadata.name}.${NAMESPACE}.svc:${svc.spec.ports[0].port}`,
    'the agents dial the Service',
  );
});

test('the node agent runs the CLI contract, with exactly the capabilities it needs and nothing privileged', () => {
  const ds = agent();
  const pod = ds.spec.template.spec;
  const c = onlyContainer(ds);
  assert.deepEqual(c.command, ENTRYPOINT);
  assert.deepEqual(c.args, NODE_ARGS);
  const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.value ?? e.valueFrom?.fieldRef?.fieldPath]));
  assert.deepEqual(env, {
    NODE_NAME: 'spec.nodeName',
    POD_NAME: 'metadata.name',
    POD_NAMESPACE: 'metadata.namespace',
    INSTANCE_IP: 'status.podIP',
    AMBIT_LOG_LEVEL: 'info',
  });
  assert.ok(c.env.findIndex((e: Doc) => e.name === 'NODE_NAME') >= 0, '$(NODE_NAME) in the arguments expands from the env');

  // Privileges: capabilities instead of privileged, no host PID/IPC.
  for (const k of containersOf(pod)) assert.notEqual(k.securityContext?.privileged, true, `${k.name}: never privileged: true`);
  assert.deepEqual([...c.securityContext.capabilities.add].sort(), [...NODE_CAPABILITIES].sort());
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.equal(c.securityContext.runAsUser, 0);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.securityContext.seccompProfile.type, 'Unconfined');
  assert.equal(c.securityContext.appArmorProfile.type, 'Unconfined');
  const raw = fs.readFileSync(path.join(BASE, 'node-daemonset.yaml'), 'utf8');
  const lines = raw.split('\n');
  const seccompAt = lines.findIndex((l) => l.trim() === 'seccompProfile:');
  let first = seccompAt;
  while (first > 0 && lines[first - 1]?.trim().startsWith('#')) first--;
  const why = lines.slice(first, seccompAt).join(' ');
  for (const word of ['bpf(2)', 'setns(2)', 'RuntimeDefault'])
    assert.ok(why.includes(word), `the comment above seccompProfile says why it is Unconfined (${word})`);
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(pod.hostPID, undefined);
  assert.equal(pod.hostIPC, undefined);
  assert.equal(pod.serviceAccountName, 'ambit-node');

  // Lifecycle, scheduling, probe, metrics.
  assert.ok(pod.terminationGracePeriodSeconds >= DRAIN_SECONDS + 5, `terminationGracePeriodSeconds ≥ ${DRAIN_SECONDS} s drain + 5`);
  assert.deepEqual(c.readinessProbe.httpGet, { path: '/healthz/ready', port: 15021 });
  assert.deepEqual(c.ports.map((p: Doc) => p.containerPort).sort(), [15020, 15021]);
  assert.deepEqual(ds.spec.template.metadata.annotations, {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '15020',
    'prometheus.io/path': '/stats/prometheus',
  });
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  assert.deepEqual(c.resources, { requests: { cpu: '100m', memory: '256Mi' } });
  assert.deepEqual(pod.nodeSelector, { 'kubernetes.io/os': 'linux' });

  // Host paths, and that each path argument is where its volume is mounted.
  const host = (p: string): { volume: Doc; mount: Doc } => {
    const volume = volumeOf(ds, (v) => v.hostPath?.path === p);
    assert.ok(volume, `hostPath ${p}`);
    return { volume, mount: mountOf(ds, volume.name) };
  };
  const bpffs = host('/sys/fs/bpf');
  assert.equal(bpffs.volume.hostPath.type, 'DirectoryOrCreate');
  assert.equal(bpffs.mount.mountPath, '/sys/fs/bpf', 'pins under /sys/fs/bpf/ambit (the default --pin-dir)');
  assert.notEqual(bpffs.mount.readOnly, true);
  const cgroup = host('/sys/fs/cgroup');
  assert.equal(cgroup.mount.readOnly, true);
  assert.equal(argAfter(c.args, '--pods-cgroup'), cgroup.mount.mountPath);
  const proc = host('/proc');
  assert.equal(proc.mount.readOnly, true);
  assert.equal(argAfter(c.args, '--proc'), proc.mount.mountPath);
  const netns = host('/var/run/netns');
  assert.equal(netns.mount.mountPath, '/var/run/netns');
  assert.equal(netns.mount.mountPropagation, 'HostToContainer');
  for (const p of ['/opt/cni/bin', '/etc/cni/net.d']) {
    const cniDir = host(p);
    assert.equal(cniDir.volume.hostPath.type, 'Directory', `${p}: the runtime's, never made up`);
    assert.equal(cniDir.mount.mountPath, p, `${p} at the same path, for \`kubectl exec … ambit cni uninstall\``);
  }
  const cniRun = host('/var/lib/ambit/cni');
  assert.equal(cniRun.volume.hostPath.type, 'DirectoryOrCreate');
  assert.equal(path.posix.dirname(argAfter(c.args, '--cni-socket')), cniRun.mount.mountPath, 'the CNI socket is on the host path');
  assert.notEqual(cniRun.mount.readOnly, true);
  assert.equal(pod.volumes.filter((v: Doc) => v.hostPath).length, 7, 'no other host paths');

  const token = volumeOf(ds, (v) => v.projected);
  assert.deepEqual(token.projected.sources, [
    { serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 3600, path: 'istio-ca-token' } },
  ]);
  assert.equal(argAfter(c.args, '--xds-token'), path.posix.join(mountOf(ds, token.name).mountPath, 'istio-ca-token'));
  const root = volumeOf(ds, (v) => v.configMap?.name === 'ambit-ca-root');
  assert.deepEqual(root.configMap.items, [{ key: 'root-cert.pem', path: 'root-cert.pem' }]);
  assert.equal(argAfter(c.args, '--xds-root'), path.posix.join(mountOf(ds, root.name).mountPath, 'root-cert.pem'));
});

test('install-cni puts ambit-cni on the node as istio-cni does: run here against a scratch root, idempotent, undone by uninstall', () => {
  const ds = agent();
  const c = onlyContainer(ds);
  const init = initContainer(ds);
  assert.equal(init.image, c.image, 'the same image as the agent');
  assert.deepEqual(init.command, ['sh', '-c']);
  assert.equal(init.securityContext.privileged, false);
  assert.equal(init.securityContext.allowPrivilegeEscalation, false);
  assert.equal(init.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(init.securityContext.capabilities, { drop: ['ALL'] }, 'root writing root-owned host files needs no capability');
  assert.deepEqual(init.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }]);
  const script: string = at(init.args, 0, 'the install script');
  assert.equal(init.args.length, 1);
  const socket = argAfter(c.args, '--cni-socket');
  const members = membersFileOf(socket);
  // Every host directory the script writes is mounted at its host path (the wrapper and conflist name these paths).
  const hostDirs = ['/opt/cni/bin', '/etc/cni/net.d', path.posix.dirname(socket)];
  for (const dir of hostDirs) {
    const v = volumeOf(ds, (x) => x.hostPath?.path === dir);
    assert.ok(v, `hostPath ${dir}`);
    const m = init.volumeMounts.find((x: Doc) => x.name === v.name);
    assert.equal(m?.mountPath, dir, `install-cni mounts ${dir} at ${dir}`);
    assert.notEqual(m?.readOnly, true);
  }
  assert.equal(init.volumeMounts.length, hostDirs.length, 'nothing else mounted');
  assert.ok(script.includes(`exec node ${at(ENTRYPOINT, 1, 'ENTRYPOINT')} cni install `), "the image's CLI");
  assert.ok(script.includes(`--socket ${socket} `), 'the plugin asks the socket the agent serves');
  assert.ok(script.includes(members), 'the members file beside that socket');
  assert.match(dockerfile().stages.at(-1)?.from ?? '', /\/node:20-bookworm-slim$/, 'the official image: node is /usr/local/bin/node');

  // The script as the init container runs it, with / moved to a scratch directory.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-install-cni-'));
  try {
    let local = script
      .replaceAll('/usr/local/bin/node', process.execPath)
      .replaceAll(
        `exec node ${at(ENTRYPOINT, 1, 'ENTRYPOINT')}`,
        `exec ${process.execPath} ${path.resolve(__dirname, '../../src/cli/main.js')}`,
      );
    for (const dir of hostDirs) local = local.replaceAll(dir, path.join(root, dir));
    for (const dir of hostDirs) fs.mkdirSync(path.join(root, dir), { recursive: true });
    const conf = path.join(root, '/etc/cni/net.d/10-bridge.conflist');
    const bridge = { cniVersion: '1.0.0', name: 'pods', plugins: [{ type: 'bridge', bridge: 'cni0' }, { type: 'portmap' }] };
    fs.writeFileSync(conf, JSON.stringify(bridge));
    const run = (): string => execFileSync('sh', ['-c', local], { env: { ...process.env, NODE_NAME: 'n1' }, encoding: 'utf8' });
    const first = run();
    assert.match(first, /added +\S+\/opt\/cni\/bin\/ambit-cni\n/);
    const chained = JSON.parse(fs.readFileSync(conf, 'utf8')) as typeof bridge;
    assert.deepEqual(chained.plugins.at(-1), { type: 'ambit-cni', socket: path.join(root, socket) });
    assert.deepEqual(chained.plugins.slice(0, -1), bridge.plugins);
    const seeded = JSON.parse(fs.readFileSync(path.join(root, members), 'utf8'));
    assert.equal(seeded.node, 'n1');
    assert.deepEqual(seeded.pods, [], 'a first install lets pods pass until the agent has its state');
    // The plugin runs on the copy of Node.js beside it, outside the image.
    const wrapper = path.join(root, '/opt/cni/bin/ambit-cni');
    assert.ok(fs.readFileSync(wrapper, 'utf8').includes(path.join(root, '/opt/cni/bin/ambit-cni.d/node')));
    const version = execFileSync(wrapper, [], { env: { CNI_COMMAND: 'VERSION' }, input: '{}', encoding: 'utf8' });
    assert.equal(JSON.parse(version).cniVersion, '1.0.0');

    // Again (a restarted pod): nothing changes, and the agent's members file is kept.
    const written = JSON.stringify({ node: 'n1', written: 'then', pods: [{ namespace: 'shop', name: 'web', addresses: [] }] });
    fs.writeFileSync(path.join(root, members), written);
    assert.ok(
      run()
        .trim()
        .split('\n')
        .every((l) => l.startsWith('unchanged')),
    );
    assert.equal(fs.readFileSync(path.join(root, members), 'utf8'), written);

    // Removal, as daemonset/README.md says: the conflist as it was, the plugin gone.
    execFileSync(process.execPath, [
      path.resolve(__dirname, '../../src/cli/main.js'),
      'cni',
      'uninstall',
      '--conf-dir',
      path.join(root, '/etc/cni/net.d'),
      '--bin-dir',
      path.join(root, '/opt/cni/bin'),
    ]);
    assert.deepEqual(JSON.parse(fs.readFileSync(conf, 'utf8')), bridge);
    assert.deepEqual(fs.readdirSync(path.join(root, '/opt/cni/bin')), []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  const readme = fs.readFileSync(path.join(BASE, 'README.md'), 'utf8');
  assert.ok(readme.includes('ambit cni uninstall'), 'daemonset/README.md says how to take the plugin out before removal');
});

test('the control plane runs the CLI contract, unprivileged, on its ConfigMap and CA Secret', () => {
  const docs = rendered();
  const cp = controlPlane(docs);
  const pod = cp.spec.template.spec;
  const c = onlyContainer(cp);
  assert.equal(cp.spec.replicas, 1);
  assert.equal(pod.initContainers, undefined, 'no init containers');
  assert.deepEqual(c.command, ENTRYPOINT);
  assert.deepEqual(c.args, CONTROL_PLANE_ARGS);
  assert.equal(pod.serviceAccountName, 'ambit-control-plane');
  assert.deepEqual(c.readinessProbe.tcpSocket, { port: 15012 });
  assert.equal(pod.hostNetwork, undefined);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] });

  // --config is the ConfigMap's mesh.yaml, which the project's own parser accepts.
  const config = find(docs, 'ConfigMap', 'ambit-config');
  const cfgVolume = volumeOf(cp, (v) => v.configMap?.name === 'ambit-config');
  assert.equal(argAfter(c.args, '--config'), path.posix.join(mountOf(cp, cfgVolume.name).mountPath, 'mesh.yaml'));
  assert.deepEqual(Object.keys(config.data), ['mesh.yaml']);
  const mesh = parseConfig(config.data['mesh.yaml'], 'daemonset/config.yaml mesh.yaml');
  assert.equal(mesh.trustDomain, 'cluster.local');
  assert.deepEqual([mesh.nodes, mesh.workloads, mesh.services, mesh.policies], [[], [], [], []]);

  // ca.dir is where the operator's Secret is mounted, readable by the pod's group only.
  const ca = volumeOf(cp, (v) => v.secret?.secretName === 'ambit-ca');
  assert.equal(mountOf(cp, ca.name).mountPath, mesh.ca.dir);
  assert.equal(mountOf(cp, ca.name).readOnly, true);
  assert.equal(ca.secret.defaultMode, 0o440);
  assert.equal(pod.securityContext.fsGroup, pod.securityContext.runAsGroup);
});

test('RBAC: the agent reads pods and namespaces, the control plane adds services, endpointslices, gateways, routes, authorizationpolicies, destinationrules, virtualservices, httplocalratelimitpolicies and tokenreviews; nothing else', () => {
  const docs = rendered();
  const rules = (name: string): Doc => find(docs, 'ClusterRole', name).rules;
  assert.deepEqual(rules('ambit-node'), [{ apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] }]);
  assert.deepEqual(rules('ambit-control-plane'), [
    { apiGroups: [''], resources: ['pods', 'namespaces', 'services'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways', 'httproutes', 'grpcroutes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['security.istio.io'], resources: ['authorizationpolicies'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['networking.istio.io'], resources: ['destinationrules', 'virtualservices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['policy.linkerd.io'], resources: ['httplocalratelimitpolicies'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  ]);
  for (const name of ['ambit-node', 'ambit-control-plane']) {
    const b = find(docs, 'ClusterRoleBinding', name);
    assert.deepEqual(b.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name });
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name, namespace: NAMESPACE }]);
    find(docs, 'ServiceAccount', name);
  }
  assert.equal(docs.filter(({ doc }) => /Role/.test(doc.kind)).length, 4, 'no other roles or bindings');
});

// ---------------------------------------------------------------- the image

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
  line: number;
}

function dockerfile(): { stages: { from: string; as?: string; copies: Copy[]; runs: string[] }[]; entrypoint: string[] } {
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  const stages: { from: string; as?: string; copies: Copy[]; runs: string[] }[] = [];
  let entrypoint: string[] = [];
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const [instr = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    const stage = (): (typeof stages)[number] => must(stages.at(-1), `Dockerfile line ${i + 1}: ${instr} before any FROM`);
    switch (instr.toUpperCase()) {
      case 'FROM': {
        const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
        assert.ok(m, `Dockerfile line ${i + 1}: FROM image [AS name]`);
        stages.push({ from: must(m[1], 'the image'), as: m[2], copies: [], runs: [] });
        break;
      }
      case 'COPY': {
        const words = args.split(/\s+/);
        const from = words[0]?.startsWith('--from=') ? words.shift()?.slice('--from='.length) : undefined;
        assert.ok(!words[0]?.startsWith('--'), `Dockerfile line ${i + 1}: only --from is understood here`);
        const dest = must(words.at(-1), `Dockerfile line ${i + 1}: COPY's destination`);
        stage().copies.push({ from, sources: words.slice(0, -1), dest, line: i + 1 });
        break;
      }
      case 'RUN':
        stage().runs.push(args);
        break;
      case 'ENTRYPOINT':
        entrypoint = JSON.parse(args);
        break;
      default:
        break;
    }
  });
  return { stages, entrypoint };
}

test("the Dockerfile copies what `make build` produced, to where the code looks, and runs the manifests' command", () => {
  const { stages, entrypoint } = dockerfile();
  assert.equal(stages.length, 2, 'build and run stages');
  const [build, run] = [at(stages, 0, 'stages'), at(stages, 1, 'stages')];
  assert.equal(build.as, 'build');
  assert.match(build.from, /node:20-bookworm$/);
  assert.match(run.from, /node:20-bookworm-slim$/);
  assert.ok(
    build.runs.some((r) => /apt-get install .*\bclang\b.*\bllvm\b.*\blibbpf-dev\b.*\bmake\b/.test(r)),
    'build stage installs clang llvm libbpf-dev make',
  );
  assert.ok(build.runs.some((r) => /\bnpm ci\b/.test(r)) && build.runs.some((r) => /\bmake build\b/.test(r)), 'npm ci, then make build');
  assert.ok(!build.runs.some((r) => /install-deps|make (deps|test|demo)\b/.test(r)), 'no target that installs host packages or mounts');
  assert.ok(
    run.runs.some((r) => /apt-get install .*\blibbpf1\b/.test(r)),
    'run stage installs libbpf1 (loaded through koffi)',
  );

  // The build stage's context copies exist in the repository and are not .dockerignore'd.
  const ignored = fs
    .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const workdir = '/src';
  const inBuild = new Map<string, string>(); // path in the build stage → path in the repository
  for (const copy of build.copies) {
    assert.equal(copy.from, undefined, `line ${copy.line}: the build stage copies from the context`);
    for (const s of copy.sources) {
      const rel = s.replace(/\/$/, '');
      assert.ok(fs.existsSync(path.join(ROOT, rel)), `Dockerfile line ${copy.line}: ${s} is not in the repository`);
      assert.ok(!ignored.some((g) => g.replace(/\/$/, '') === rel.split('/')[0]), `Dockerfile line ${copy.line}: ${s} is in .dockerignore`);
      inBuild.set(path.posix.join(workdir, rel), rel);
    }
  }
  // What `make build` makes, plus what the build stage copied in.
  for (const made of ['node_modules', 'dist/src', 'build/bpf']) inBuild.set(path.posix.join(workdir, made), made);

  const image = new Map<string, string>(); // path in the image → path in the repository
  for (const copy of run.copies) {
    assert.equal(copy.from, 'build', `line ${copy.line}: the run stage copies from the build stage`);
    assert.equal(copy.sources.length, 1);
    const src = at(copy.sources, 0, `Dockerfile line ${copy.line}: COPY's sources`).replace(/\/$/, '');
    const rel = inBuild.get(src) ?? [...inBuild].find(([p]) => src.startsWith(`${p}/`))?.[1];
    assert.ok(
      rel !== undefined && src.startsWith(workdir),
      `Dockerfile line ${copy.line}: ${src} is neither copied in nor made by make build`,
    );
    const repoPath = path.join(ROOT, src.slice(workdir.length + 1));
    assert.ok(fs.existsSync(repoPath), `Dockerfile line ${copy.line}: ${path.relative(ROOT, repoPath)} does not exist after make build`);
    image.set(path.posix.resolve('/app', copy.dest).replace(/\/$/, ''), path.relative(ROOT, repoPath));
  }
  const inImage = (p: string): string | undefined => {
    for (const [dst, rel] of image) if (p === dst || p.startsWith(`${dst}/`)) return path.join(ROOT, rel, p.slice(dst.length));
    return undefined;
  };
  for (const needed of [
    '/app/package.json',
    '/app/node_modules/koffi',
    '/app/build/bpf/redirect.o',
    '/app/build/bpf/inbound.o',
    '/app/proto/istio/workload/workload.proto',
  ]) {
    const local = inImage(needed);
    assert.ok(local && fs.existsSync(local), `the image has ${needed}`);
  }
  // Where the code reads its objects and protos from, relative to dist/src, lands on what was copied.
  assert.equal(path.relative(ROOT, DEFAULT_OBJ_DIR), 'build/bpf');
  assert.equal(path.relative(ROOT, PROTO_DIR), 'proto');
  assert.equal(inImage('/app/build/bpf'), path.join(ROOT, 'build/bpf'));
  assert.equal(inImage('/app/proto'), path.join(ROOT, 'proto'));

  // ENTRYPOINT = the manifests' command, and its script is in the image.
  assert.deepEqual(entrypoint, ENTRYPOINT);
  const script = at(entrypoint, 1, 'ENTRYPOINT');
  const main = inImage(script);
  assert.ok(main && fs.existsSync(main), `${script} is in the image`);
  for (const w of [agent(), controlPlane()])
    assert.deepEqual(onlyContainer(w).command, entrypoint, `${w.metadata.name}: command = ENTRYPOINT`);
});
