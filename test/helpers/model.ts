// Mesh model entries for unit tests that build a MeshStore by hand: the
// fields every workload needs, so a test names only what it is about.
import type { Workload } from '../../src/state/types';

/** An ambient HBONE workload default/NAME on node n1 at ip, service account NAME. */
export const modelWorkload = (name: string, ip: string, extra: Partial<Workload> = {}): Workload => ({
  uid: `default/${name}`,
  name,
  namespace: 'default',
  serviceAccount: name,
  node: 'n1',
  addresses: [ip],
  protocol: 'HBONE',
  dataplane: 'ambient',
  labels: {},
  capacity: 1,
  authorizationPolicies: [],
  ...extra,
});
