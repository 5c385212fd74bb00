// `ambit control-plane`: the composition root of the control plane — delta
// xDS and the built-in CA on one TLS gRPC server, state from the standalone
// file (and, with Kubernetes, from the API server), stopped on SIGTERM.
import { ControlPlane } from '../control-plane/server';
import { KubeClient } from '../kube/client';
import { installLastResort } from '../observability/last-resort';
import { createLogger } from '../observability/log';

export interface ControlPlaneSettings {
  configFile: string;
  listen?: string;
  /** Extra names in the serving certificate. */
  names: { dns: string[]; ips: string[] };
  /** Watch the cluster and review node tokens through its API server (in-cluster defaults unless api is given). */
  kubernetes?: { api?: string };
  maxResponseBytes?: number;
}

export async function runControlPlane(s: ControlPlaneSettings): Promise<ControlPlane> {
  const log = createLogger();
  const cp = await ControlPlane.start({
    configFile: s.configFile,
    listen: s.listen,
    log,
    names: s.names,
    kube: s.kubernetes && KubeClient.inCluster(s.kubernetes.api),
    xds: s.maxResponseBytes === undefined ? undefined : { maxResponseBytes: s.maxResponseBytes },
  });
  const stop = (signal: string): void => {
    log.info({ signal }, 'control plane stopping');
    void cp.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  installLastResort({ log, role: 'control plane' });
  return cp;
}
