// A control plane that misbehaves on purpose, for the tests of how a node
// copes: the real `ambit control-plane` (ControlPlane), except that
//   --wrong-identity  the CA signs every request for another identity;
//   SIGUSR2           pushes a malformed version of one workload resource
//                     (a 5-byte address), which a node must NACK.
// Usage: node xds-fixture.js CONFIG LISTEN SERVER_IP CORRUPT_UID [--wrong-identity]
import { ControlPlane } from '../../src/control-plane/server';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { createLogger } from '../../src/observability/log';
import { pack, TYPE_ADDRESS } from '../../src/protocol/protos';
import { loadConfigFile } from '../../src/sources/config';
import { toResources } from '../../src/sources/xds-resources';
import { MeshStore } from '../../src/state/store';

async function main(): Promise<void> {
  const [configFile, listen, serverIp, corruptUid, flag] = process.argv.slice(2);
  if (!configFile || !listen || !serverIp || !corruptUid) {
    console.error('usage: node xds-fixture.js CONFIG LISTEN SERVER_IP CORRUPT_UID [--wrong-identity]');
    process.exit(2);
  }
  const log = createLogger('info');
  const config = loadConfigFile(configFile);
  const ca = await BuiltinCa.open(config.ca.dir);
  const impostor = `spiffe://${config.trustDomain}/ns/default/sa/impostor`;
  const signer = flag === '--wrong-identity' ? { sign: (csr: string, _id: string, ttl: number) => ca.sign(csr, impostor, ttl) } : undefined;
  const cp = await ControlPlane.start({ configFile, listen, names: { dns: [], ips: [serverIp] }, signer, log });
  process.on('SIGUSR2', () => {
    const store = new MeshStore(cp.config);
    const bad = toResources(cp.config, (s) => store.endpoints(s));
    const w = cp.config.workloads.find((x) => x.uid === corruptUid);
    const addresses = bad.get(TYPE_ADDRESS);
    if (!w || !addresses) return void log.error({ uid: corruptUid }, 'fixture: no such workload to corrupt');
    const resource = pack(TYPE_ADDRESS, {
      workload: {
        uid: w.uid,
        name: w.name,
        namespace: w.namespace,
        service_account: w.serviceAccount,
        node: w.node,
        tunnel_protocol: 'HBONE',
        addresses: [Buffer.from([10, 200, 2, 12, 7])],
      },
    });
    addresses.set(w.uid, { name: w.uid, version: 'corrupt', resource });
    cp.xds.update(bad);
    log.info({ uid: w.uid }, 'fixture pushed a malformed workload');
  });
  log.info({ listen }, 'fixture serving');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
