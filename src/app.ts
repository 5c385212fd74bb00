// The composition root of `ambit node`: builds the components in the order
// a connection meets them — datapath, enrolment (listeners), tunnel — and
// owns start and stop. Everything else receives what it needs as arguments.
import { Enrolment, type EnrolledPod } from './agent/enrolment';
import { Datapath, DEFAULT_PIN_DIR } from './datapath/loader';
import { cgroup2Root, formatFindings, probe } from './datapath/probe';
import { AmbitError } from './errors';
import type { Logger } from './observability/log';
import type { MeshConfig } from './state/types';
import { attachRelay } from './tunnel/relay';

export interface NodeOptions {
  config: MeshConfig;
  nodeName: string;
  /** cgroup v2 directory holding this node's pods; the cgroup2 root by default. */
  podsCgroup?: string;
  pinDir?: string;
  log: Logger;
}

export class NodeApp {
  private constructor(
    private readonly datapath: Datapath,
    readonly enrolment: Enrolment,
    private readonly log: Logger,
  ) {}

  static start(opts: NodeOptions): NodeApp {
    const { config, nodeName, log } = opts;
    const pinDir = opts.pinDir ?? DEFAULT_PIN_DIR;
    if (!config.nodes.some((n) => n.name === nodeName)) {
      throw new AmbitError('AMBIT_E_CONFIG', `node ${JSON.stringify(nodeName)} is not in the configuration's nodes`, `use one of: ${config.nodes.map((n) => n.name).join(', ')}`);
    }
    const findings = probe(pinDir);
    if (findings.some((f) => !f.ok)) {
      throw new AmbitError('AMBIT_E_KERNEL', `this host cannot run the datapath:\n${formatFindings(findings.filter((f) => !f.ok))}`, 'fix the lines marked FAIL; `ambit datapath probe` shows them all');
    }
    const podsCgroup = opts.podsCgroup ?? cgroup2Root()!;
    const datapath = Datapath.open({ pinDir, cgroupPath: podsCgroup });
    log.info({ pinDir, podsCgroup, attachments: datapath.attachments }, 'datapath attached');

    const enrolment = new Enrolment(datapath);
    const app = new NodeApp(datapath, enrolment, log);
    for (const w of config.workloads) {
      if (w.node !== nodeName || w.protocol !== 'HBONE') continue;
      app.attachTunnel(enrolment.enrol(w));
      log.info({ pod: w.uid, addresses: w.addresses }, 'pod enrolled');
    }
    const stale = enrolment.removeStale();
    if (stale.length) log.info({ removed: stale }, 'removed state of pods no longer on this node');
    return app;
  }

  private attachTunnel(pod: EnrolledPod): void {
    attachRelay(pod, { maps: this.datapath.maps, log: this.log });
  }

  /**
   * Stops serving. Capture stays pinned on purpose: until an agent runs
   * again, enrolled pods fail closed instead of bypassing the mesh.
   * `ambit datapath cleanup` removes it.
   */
  stop(): void {
    for (const pod of this.enrolment.list()) {
      pod.outbound.close();
      pod.inboundPlain.close();
      pod.inboundHbone.close();
    }
    this.datapath.close();
  }
}
