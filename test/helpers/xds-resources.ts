// The control plane's xDS resources for a configuration, as the xDS tests
// build and pick them apart.
import { toResources, type XdsResource } from '../../src/sources/xds-resources';
import { MeshStore } from '../../src/state/store';
import type { MeshConfig } from '../../src/state/types';
import { must } from './must';

export type Resources = Map<string, Map<string, XdsResource>>;

/** Every resource of cfg by type URL, with the endpoints its own store computes. */
export function resourcesOf(cfg: MeshConfig): Resources {
  const st = new MeshStore(cfg);
  return toResources(cfg, (s) => st.endpoints(s));
}

/** The resources of one type (toResources makes both types, even when empty). */
export const ofType = (res: Resources, typeUrl: string): Map<string, XdsResource> => must(res.get(typeUrl), `resources of ${typeUrl}`);

/** One resource by type and name. */
export const resource = (res: Resources, typeUrl: string, name: string): XdsResource =>
  must(ofType(res, typeUrl).get(name), `${typeUrl} resource ${name}`);
