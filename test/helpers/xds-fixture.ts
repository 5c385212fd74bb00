// A control plane that misbehaves on purpose, for the tests of how a node
// copes: the real xDS server and CA service (same code as `ambit
// control-plane`), except that
//   --wrong-identity  the CA signs every request for another identity;
//   SIGUSR2           pushes a malformed version of one workload resource
//                     (a 5-byte address), which a node must NACK.
// Usage: node xds-fixture.js CONFIG LISTEN SERVER_IP CORRUPT_UID [--wrong-identity]
import * as grpc from '@grpc/grpc-js';
import { caServiceHandlers } from '../../src/control-plane/ca-service';
import { serverCredentials } from '../../src/control-plane/tls';
import { NodeTokens } from '../../src/control-plane/tokens';
import { XdsServer } from '../../src/control-plane/xds-server';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { createLogger } from '../../src/observability/log';
import { grpcServices, pack, TYPE_ADDRESS } from '../../src/protocol/protos';
import { loadConfigFile } from '../../src/state/config';
import { MeshStore } from '../../src/state/store';
import { toResources } from '../../src/state/xds-resources';

async function main(): Promise<void> {
  const [configFile, listen, serverIp, corruptUid, flag] = process.argv.slice(2);
  const log = createLogger('info');
  const config = loadConfigFile(configFile);
  const store = new MeshStore(config);
  const ca = await BuiltinCa.open(config.ca.dir);
  const tls = await serverCredentials(ca, { dns: [], ips: [serverIp] });
  const tokens = new NodeTokens(config.controlPlane.tokens);
  const xds = new XdsServer((md) => tokens.authenticate(md), log);
  const impostor = `spiffe://${config.trustDomain}/ns/default/sa/impostor`;
  const signer = flag === '--wrong-identity' ? { sign: (csr: string, _id: string, ttl: number) => ca.sign(csr, impostor, ttl) } : ca;
  const identitiesOn = (node: string): Set<string> => new Set(store.workloadsOn(node).map((w) => store.identityOf(w)));
  const server = new grpc.Server();
  server.addService(grpcServices().ads.service, xds.handlers());
  server.addService(grpcServices().ca.service, caServiceHandlers({ ca: signer, tokens, identitiesOn, log }));
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(tls.rootPem), [{ cert_chain: Buffer.from(tls.certPem), private_key: Buffer.from(tls.keyPem) }], false);
  await new Promise<number>((resolve, reject) => server.bindAsync(listen, creds, (err, port) => (err ? reject(err) : resolve(port))));
  const good = toResources(config, (s) => store.endpoints(s));
  xds.update(good);
  process.on('SIGUSR2', () => {
    const bad = new Map([...good].map(([t, m]) => [t, new Map(m)]));
    const w = config.workloads.find((x) => x.uid === corruptUid)!;
    const resource = pack(TYPE_ADDRESS, { workload: { uid: w.uid, name: w.name, namespace: w.namespace, service_account: w.serviceAccount, node: w.node, tunnel_protocol: 'HBONE', addresses: [Buffer.from([10, 200, 2, 12, 7])] } });
    bad.get(TYPE_ADDRESS)!.set(w.uid, { name: w.uid, version: 'corrupt', resource });
    xds.update(bad);
    log.info({ uid: w.uid }, 'fixture pushed a malformed workload');
  });
  log.info({ listen }, 'fixture serving');
}

main().catch((err) => { console.error(err); process.exit(1); });
