// The in-process fuzz targets `make fuzz` runs (the HBONE target, which
// needs root and a test bed, is hbone-fuzz.ts): an input arbitrary and a
// check that returns an outcome or throws on a property violation.
import type fc from 'fast-check';
import { checkConfig, configInputArb } from './config-target';
import { checkCrd, checkEngine, crdInputArb, engineInputArb } from './policy-target';
import { checkXds, xdsInputArb } from './xds-target';

export interface FuzzTarget<T = unknown> {
  name: string;
  what: string;
  arb: fc.Arbitrary<T>;
  check: (input: T) => string;
}

const target = <T>(t: FuzzTarget<T>): FuzzTarget => t as unknown as FuzzTarget;

export const TARGETS: FuzzTarget[] = [
  target({ name: 'config', what: 'mesh YAML → config or AMBIT_E_CONFIG', arb: configInputArb, check: checkConfig }),
  target({ name: 'xds', what: 'xDS resource → decoded or a field-level ResourceError', arb: xdsInputArb, check: checkXds }),
  target({ name: 'policy-crd', what: 'Istio objects → policies or problems', arb: crdInputArb, check: checkCrd }),
  target({
    name: 'policy-engine',
    what: 'random policies × connections: DENY first, no ALLOW → allow, …',
    arb: engineInputArb,
    check: checkEngine,
  }),
];
