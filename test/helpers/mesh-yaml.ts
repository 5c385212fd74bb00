// A valid standalone YAML with every kind of entry, for tests that change
// one thing at a time, and the problems parseConfig reports for a variant.
import assert from 'node:assert/strict';
import { AmbitError } from '../../src/errors';
import { parseConfig } from '../../src/sources/config';

export const HASH_A = 'a'.repeat(64);
export const HASH_B = 'b'.repeat(64);

/** A valid file with every kind of entry; tests change one thing at a time. */
export const BASE = `
trustDomain: cluster.local
ca: { dir: /var/lib/ambit/ca }
rootNamespace: istio-system
nodes:
  - { name: node-1, address: 10.201.0.1 }
  - { name: node-2, address: 10.201.0.2 }
workloads:
  - uid: default/sleep
    name: sleep
    namespace: default
    serviceAccount: sleep
    node: node-1
    addresses: [10.200.0.10]
    dataplane: ambient
    capacity: 1
    labels: { app: sleep }
  - uid: default/echo
    name: echo
    namespace: default
    serviceAccount: echo
    node: node-2
    addresses: [10.200.0.20]
    labels: { app: echo }
services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    addresses: [10.96.0.10]
    ports: [{ port: 80, targetPort: 8080 }]
    selector: { app: echo }
controlPlane:
  tokens:
    - { node: node-1, sha256: ${HASH_A} }
    - { node: node-2, sha256: ${HASH_B} }
policies:
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: { name: allow-sleep, namespace: default }
    spec:
      selector: { matchLabels: { app: echo } }
      action: ALLOW
      rules:
        - from: [{ source: { principals: [cluster.local/ns/default/sa/sleep] } }]
          to: [{ operation: { ports: ["8080"] } }]
  - apiVersion: security.istio.io/v1beta1
    kind: PeerAuthentication
    metadata: { name: strict, namespace: default }
    spec:
      mtls: { mode: STRICT }
`;

/** The problems of an invalid file, one per line; fails if it parses. */
export function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'mesh.yaml');
  } catch (err) {
    assert.ok(err instanceof AmbitError, `not an AmbitError: ${String(err)}`);
    assert.equal(err.code, 'AMBIT_E_CONFIG');
    return err.message
      .split('\n')
      .slice(1)
      .map((l) => l.replace(/^ {2}- /, ''));
  }
  assert.fail('the file parsed; it should have been rejected');
}

export function once(text: string, from: string, to: string): string {
  assert.equal(text.split(from).length, 2, `"${from}" must occur once in the base file`);
  return text.replace(from, to);
}
