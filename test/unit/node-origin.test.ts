// Which plaintext connections are the node's own (kubelet probes, exempt
// from policy): the flag, the socket-table encoding against this host's real
// table, and the decision with the host replaced.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import {
  DEFAULT_PROBE_SOURCES,
  type HostView,
  NodeOrigin,
  type PlainConnection,
  parseProbeSources,
  procAddress,
  THIS_HOST,
  tableHolds,
} from '../../src/tunnel/node-origin';

test('--probe-sources: node, none, addresses; mistakes say what is wrong', () => {
  assert.deepEqual(parseProbeSources('node'), { node: true, addresses: [] });
  assert.deepEqual(parseProbeSources('none'), { node: false, addresses: [] });
  assert.deepEqual(parseProbeSources('node, 169.254.7.127,169.254.7.127'), { node: true, addresses: ['169.254.7.127'] });
  assert.deepEqual(parseProbeSources('fd00::7'), { node: false, addresses: ['fd00::7'] });
  assert.equal(parseProbeSources(''), 'is empty; give node, none, or addresses such as node,169.254.7.127');
  assert.equal(parseProbeSources('none,node'), 'none excludes every other item');
  assert.equal(parseProbeSources('node,10.0.0.0/8,kubelet'), '"10.0.0.0/8", "kubelet": neither node nor an IP address');
});

test('procAddress: each 32-bit word in host byte order, the port big-endian, upper case', () => {
  assert.equal(procAddress('127.0.0.1', 80, 4, true), '0100007F:0050');
  assert.equal(procAddress('127.0.0.1', 80, 4, false), '7F000001:0050');
  assert.equal(procAddress('10.200.1.11', 8080, 4, true), '0B01C80A:1F90');
  assert.equal(procAddress('::1', 80, 6, true), '00000000000000000000000001000000:0050');
  assert.equal(procAddress('::ffff:10.200.1.11', 65535, 6, true), '0000000000000000FFFF00000B01C80A:FFFF');
  assert.equal(procAddress('fd00:1::2', 1, 6, false), 'FD000001000000000000000000000002:0001');
  assert.equal(procAddress('10.200.1.11', 80, 6), undefined, 'an IPv4 address has no tcp6 form of its own');
});

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

/** A connection over loopback; resolves with the server's side of it (what the pod's listener would hold). */
async function loopback(host: string): Promise<net.Socket> {
  const server = net.createServer();
  servers.push(server);
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as net.AddressInfo;
  sockets.push(net.connect(port, host));
  const s = await accepted;
  sockets.push(s);
  return s;
}

const seen = (s: net.Socket): PlainConnection => ({
  srcIp: s.remoteAddress ?? '',
  srcPort: s.remotePort ?? 0,
  dstIp: s.localAddress ?? '',
  dstPort: s.localPort ?? 0,
});

test("this host's socket table holds the client end of a loopback connection, found by the server end's addresses", async () => {
  const s = await loopback('127.0.0.1');
  const table = await THIS_HOST.socketTable(4);
  const c = seen(s);
  const local = procAddress(c.srcIp, c.srcPort, 4);
  const remote = procAddress(c.dstIp, c.dstPort, 4);
  assert.ok(local && remote);
  assert.equal(tableHolds(table, local, remote), true, `${local} → ${remote} in\n${table}`);
  assert.equal(tableHolds(table, remote, local), true, 'the server end too');
  assert.equal(await new NodeOrigin(DEFAULT_PROBE_SOURCES).check(c), 'node_socket');
});

test('a connection from a local address but a port no socket of this host holds is not the node', async () => {
  const s = await loopback('127.0.0.1');
  const c = seen(s);
  // The port the client used, plus one, is (almost surely) no socket connected to this server.
  const forged = { ...c, srcPort: c.srcPort === 65535 ? 1 : c.srcPort + 1 };
  assert.equal(await new NodeOrigin(DEFAULT_PROBE_SOURCES).check(forged), undefined);
  assert.equal(await new NodeOrigin({ node: false, addresses: [] }).check(c), undefined, 'none: not even a real local socket');
});

test('an AF_INET6 client dialing an IPv4 address is found in tcp6 (v4-mapped)', async (t) => {
  let s: net.Socket;
  try {
    s = await loopback('::ffff:127.0.0.1');
  } catch (err) {
    return t.skip(`no dual-stack loopback here: ${(err as Error).message}`);
  }
  const c = seen(s);
  assert.match(c.srcIp, /^::ffff:127\.0\.0\.1$/);
  assert.equal(await new NodeOrigin(DEFAULT_PROBE_SOURCES).check(c), 'node_socket');
});

/** A host with these addresses and socket tables, counting reads of the tables. */
function fakeHost(addresses: string[], tables: { 4?: string; 6?: string }): HostView & { reads: number } {
  const host = {
    reads: 0,
    localAddresses: () => addresses,
    socketTable: (family: 4 | 6) => {
      host.reads++;
      return Promise.resolve(tables[family] ?? '');
    },
  };
  return host;
}

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const row = (local: string, remote: string, st = '01'): string =>
  `   0: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1\n`;
/** In this host's byte order, as the kernel writes the table. */
const addr4 = (ip: string, port: number): string => procAddress(ip, port, 4) ?? assert.fail(ip);

test('decision: only a source the node holds is looked up, and only its own socket makes it the node', async () => {
  const probe: PlainConnection = { srcIp: '169.254.1.1', srcPort: 40000, dstIp: '10.200.1.11', dstPort: 8080 };
  const kubelet = row(addr4('169.254.1.1', 40000), addr4('10.200.1.11', 8080));
  const host = fakeHost(['127.0.0.1', '10.201.0.1', '169.254.1.1'], { 4: HEADER + kubelet });
  const origin = new NodeOrigin(DEFAULT_PROBE_SOURCES, host);

  assert.equal(origin.candidate('10.200.1.12'), false, 'a pod');
  assert.equal(origin.candidate('10.201.0.2'), false, 'another node');
  assert.equal(await origin.check({ ...probe, srcIp: '10.201.0.2' }), undefined);
  assert.equal(host.reads, 0, 'sources the node does not hold never cost a table read');

  assert.equal(origin.candidate('169.254.1.1'), true);
  assert.equal(origin.candidate('::ffff:169.254.1.1'), true, 'v4-mapped is the same address');
  assert.equal(await origin.check(probe), 'node_socket');
  // The node's address with no socket of the node behind it: forged, or NAT of traffic from elsewhere.
  assert.equal(await origin.check({ ...probe, srcPort: 40001 }), undefined);
  assert.equal(await origin.check({ ...probe, dstPort: 9090 }), undefined, 'a socket to another destination does not count');
  assert.equal(await origin.check({ ...probe, srcIp: '10.201.0.1' }), undefined, 'another local address, same port');
});

test('decision: an address given in --probe-sources is trusted alone; node off ignores sockets', async () => {
  const probe: PlainConnection = { srcIp: '169.254.7.127', srcPort: 1234, dstIp: '10.200.1.11', dstPort: 8080 };
  const host = fakeHost(['169.254.1.1'], {});
  const origin = new NodeOrigin({ node: false, addresses: ['169.254.7.127'] }, host);
  assert.equal(origin.candidate('169.254.7.127'), true);
  assert.equal(await origin.check(probe), 'probe_address');
  assert.equal(origin.candidate('169.254.1.1'), false, 'node off: the node address is nothing special');
  assert.equal(await origin.check({ ...probe, srcIp: '169.254.1.1' }), undefined);
  assert.equal(host.reads, 0);
});

test('decision: the node addresses are re-read once a second, not per connection', async () => {
  let now = 0;
  let addresses = ['10.201.0.1'];
  let reads = 0;
  const host: HostView = {
    localAddresses: () => {
      reads++;
      return addresses;
    },
    socketTable: () => Promise.resolve(''),
  };
  const origin = new NodeOrigin(DEFAULT_PROBE_SOURCES, host, () => now);
  assert.equal(origin.candidate('10.201.0.1'), true);
  addresses = ['10.201.0.9'];
  assert.equal(origin.candidate('10.201.0.9'), false, 'cached');
  now = 1000;
  assert.equal(origin.candidate('10.201.0.9'), true, 'a second later');
  assert.equal(reads, 2);
});
