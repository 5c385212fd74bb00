// The CNI plugin and the agent's socket without root: the plugin run as a
// runtime runs it (bin/ambit-cni, env and stdin) against a CniServer with a
// scripted handler; what the server does with peers that misbehave; the
// pod cgroup lookup over both cgroup drivers' names; install/uninstall of
// the conflist entry on a temporary directory.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { install, uninstall } from '../../src/cni/conflist';
import { addressesOf, parseCniArgs } from '../../src/cni/plugin';
import { type CniReply, type CniRequest, MAX_REQUEST_BYTES, membersFileOf, parseRequest } from '../../src/cni/protocol';
import { CniServer } from '../../src/cni/server';
import { cgroupLookupUnder } from '../../src/kube/pod-cgroup';
import { Cleanup } from '../helpers/cleanup';
import { waitFor } from '../helpers/proc';

const PLUGIN = path.resolve(__dirname, '../../../bin/ambit-cni');
const UID = '5f0c2b1e-8a7d-4c3b-9e2f-1a2b3c4d5e6f';
const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/var/run/netns/x' }],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Run {
  code: number;
  out: Record<string, unknown> | undefined;
}

function runPlugin(env: Record<string, string>, stdin: unknown): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(PLUGIN, [], { env: { PATH: process.env.PATH ?? '', AMBIT_NODE: process.execPath, ...env } }, (err, stdout) => {
      resolve({ code: err ? Number(err.code) : 0, out: stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined });
    });
    child.stdin?.end(typeof stdin === 'string' ? stdin : JSON.stringify(stdin));
  });
}

const podEnv = (command: string): Record<string, string> => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: '/var/run/netns/x',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=${UID}`,
});

const netconf = (socket: string, more: Record<string, unknown> = {}): Record<string, unknown> => ({
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  type: 'ambit-cni',
  socket,
  timeoutSeconds: 2,
  prevResult: PREV,
  ...more,
});

describe('ambit-cni plugin against a scripted agent', () => {
  const dir = cleanup.tempDir('ambit-cni');
  const socket = path.join(dir, 'cni.sock');
  const seen: CniRequest[] = [];
  let answer: (req: CniRequest) => Promise<CniReply> = async () => ({ result: 'skip', reason: 'test' });
  let server: CniServer;

  test('the socket is root-only (0600)', async () => {
    server = await CniServer.listen({
      socket,
      handle: (r) => {
        seen.push(r);
        return answer(r);
      },
      log: () => undefined,
      readTimeoutMs: 300,
      handleTimeoutMs: 1000,
      maxInFlight: 2,
    });
    cleanup.add('cni server', () => server.close());
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
  });

  test('VERSION lists the versions it speaks', async () => {
    const r = await runPlugin({ CNI_COMMAND: 'VERSION' }, { cniVersion: '1.0.0' });
    assert.deepEqual(r, { code: 0, out: { cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] } });
  });

  test('ADD sends the pod from CNI_ARGS and prevResult, and passes prevResult on unchanged when enrolled or skipped', async () => {
    for (const reply of [
      { result: 'enrolled', workload: 'shop/web' },
      { result: 'skip', reason: 'not in the mesh' },
    ] as CniReply[]) {
      answer = async () => reply;
      seen.length = 0;
      const r = await runPlugin(podEnv('ADD'), netconf(socket));
      assert.deepEqual(r, { code: 0, out: PREV });
      assert.deepEqual(seen, [
        {
          command: 'ADD',
          containerId: 'c0ffee',
          netns: '/var/run/netns/x',
          pod: { namespace: 'shop', name: 'web', uid: UID },
          addresses: ['10.244.0.5'],
        },
      ]);
    }
  });

  test('ADD fails with a CNI error when the agent could not enrol the pod', async () => {
    answer = async () => ({ result: 'error', code: 'AMBIT_E_ENROL', message: 'netns gone', hint: 'look' });
    const r = await runPlugin(podEnv('ADD'), netconf(socket));
    assert.deepEqual(r, {
      code: 1,
      out: { cniVersion: '1.0.0', code: 100, msg: 'ambit could not enrol pod shop/web: AMBIT_E_ENROL: netns gone', details: 'look' },
    });
  });

  test('an agent that does not answer in time fails ADD (timeoutSeconds)', async () => {
    answer = () => new Promise(() => undefined);
    const started = Date.now();
    const r = await runPlugin(podEnv('ADD'), netconf(socket, { timeoutSeconds: 0.5 }));
    assert.equal(r.code, 1);
    assert.equal(r.out?.code, 101);
    assert.match(String(r.out?.msg), /unreachable .*\(ETIMEDOUT\); pod shop\/web is in the mesh/);
    assert.ok(Date.now() - started < 5000);
  });

  test('DEL and CHECK are passed on; DEL prints nothing', async () => {
    answer = async (req) =>
      req.command === 'DEL' ? { result: 'unenrolled', workload: 'shop/web' } : { result: 'enrolled', workload: 'shop/web' };
    assert.deepEqual(await runPlugin(podEnv('DEL'), netconf(socket)), { code: 0, out: undefined });
    assert.deepEqual(await runPlugin(podEnv('CHECK'), netconf(socket)), { code: 0, out: undefined });
  });

  test('netconf mistakes are CNI errors with the spec codes', async () => {
    const noPrev = await runPlugin(podEnv('ADD'), netconf(socket, { prevResult: undefined }));
    assert.equal(noPrev.out?.code, 7);
    assert.match(String(noPrev.out?.msg), /chained plugin and got no prevResult/);
    assert.equal((await runPlugin(podEnv('ADD'), 'not json')).out?.code, 6);
    assert.equal((await runPlugin(podEnv('ADD'), netconf(socket, { cniVersion: '9.9.9' }))).out?.code, 1);
    const noId = await runPlugin({ ...podEnv('ADD'), CNI_CONTAINERID: '' }, netconf(socket));
    assert.equal(noId.out?.code, 4);
  });

  test('a peer that sends garbage, too much, or nothing gets an error reply and is cut off', async () => {
    const talk = (data: string | Buffer | undefined): Promise<string> =>
      new Promise((resolve) => {
        const s = net.connect(socket);
        let got = '';
        s.on('data', (d) => {
          got += d;
        });
        s.on('close', () => resolve(got));
        s.on('error', () => undefined);
        if (data !== undefined) s.write(data);
      });
    const garbage = JSON.parse(await talk('{"command":"ADD"\n')) as CniReply;
    assert.equal(garbage.result, 'error');
    assert.match((garbage as { message: string }).message, /invalid request/);
    const big = JSON.parse(await talk(Buffer.alloc(MAX_REQUEST_BYTES + 10, 'a'))) as { message: string };
    assert.match(big.message, /longer than 65536 bytes/);
    const silent = JSON.parse(await talk(undefined)) as { message: string };
    assert.match(silent.message, /no complete request within 0.3 s/);
  });

  test('beyond maxInFlight a request is answered busy at once', async () => {
    let held = 0;
    answer = () => {
      held++;
      return new Promise(() => undefined);
    };
    const stalled = [0, 1].map(() => net.connect(socket).on('error', () => undefined));
    for (const s of stalled) s.write(`${JSON.stringify({ command: 'CHECK', containerId: 'x', netns: '', addresses: [] })}\n`);
    await waitFor('both stalled requests in the agent', () => held === 2, 5000, 10);
    const r = await runPlugin(podEnv('ADD'), netconf(socket));
    for (const s of stalled) s.destroy();
    assert.equal(r.out?.code, 100);
    assert.match(String(r.out?.msg), /AMBIT_E_CNI: the agent is serving 2 CNI requests already/);
  });
});

describe('ambit-cni with the agent down', () => {
  const dir = cleanup.tempDir('ambit-cni-down');
  const socket = path.join(dir, 'cni.sock');

  test('without a members file every pod counts as a mesh pod: ADD fails', async () => {
    const r = await runPlugin(podEnv('ADD'), netconf(socket));
    assert.equal(r.code, 1);
    assert.equal(r.out?.code, 101);
    assert.match(String(r.out?.msg), /ambit node agent unreachable at .*cni\.sock \(ENOENT\)/);
    assert.match(String(r.out?.details), /no members file .*cni\.members\.json \(ENOENT\)/);
  });

  test('with one: a member fails (by name or address), anyone else passes; DEL always passes', async () => {
    const write = (pods: unknown[]): void =>
      fs.writeFileSync(membersFileOf(socket), JSON.stringify({ node: 'n1', written: '2026-01-01T00:00:00Z', pods }));
    write([{ namespace: 'shop', name: 'web', addresses: [] }]);
    assert.equal((await runPlugin(podEnv('ADD'), netconf(socket))).out?.code, 101);
    write([{ namespace: 'other', name: 'x', addresses: ['10.244.0.5'] }]);
    assert.equal((await runPlugin(podEnv('ADD'), netconf(socket))).out?.code, 101);
    write([{ namespace: 'other', name: 'x', addresses: ['10.244.0.6'] }]);
    assert.deepEqual(await runPlugin(podEnv('ADD'), netconf(socket)), { code: 0, out: PREV });
    assert.deepEqual(await runPlugin(podEnv('DEL'), netconf(socket)), { code: 0, out: undefined });
  });
});

test('request parsing names the field at fault', () => {
  assert.throws(() => parseRequest('[]'), /not a JSON object/);
  assert.throws(() => parseRequest('{"command":"RUN"}'), /command "RUN" is not ADD, DEL or CHECK/);
  assert.throws(() => parseRequest('{"command":"ADD","containerId":"c","netns":"/n","addresses":[1]}'), /addresses must be/);
  assert.throws(() => parseRequest('{"command":"ADD","containerId":"c","netns":"/n","addresses":[],"pod":{"name":"a"}}'), /pod.namespace/);
  assert.deepEqual(parseRequest('{"command":"DEL","containerId":"c","netns":"","addresses":[]}'), {
    command: 'DEL',
    containerId: 'c',
    netns: '',
    pod: undefined,
    addresses: [],
  });
  assert.deepEqual(
    [...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b;junk')],
    [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAME', 'a=b'],
    ],
  );
  assert.deepEqual(addressesOf({ ips: [{ address: '10.0.0.1/24' }, { address: 'fd00::1/64' }, { address: 'nonsense' }, {}] }), [
    '10.0.0.1',
    'fd00::1',
  ]);
});

test("a pod's cgroup is found by its uid under either driver's names, and only its own", () => {
  const root = cleanup.tempDir('ambit-cgroups');
  const other = '11111111-2222-3333-4444-555555555555';
  const made = (rel: string): string => {
    const p = path.join(root, rel);
    fs.mkdirSync(p, { recursive: true });
    return p;
  };
  made(`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${other.replace(/-/g, '_')}.slice`);
  const systemd = made(`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice`);
  assert.equal(cgroupLookupUnder(root)(UID), systemd);
  fs.rmSync(path.join(root, 'kubepods.slice'), { recursive: true });
  const guaranteed = made(`kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${UID.replace(/-/g, '_')}.slice`);
  assert.equal(cgroupLookupUnder(root)(UID), guaranteed);
  fs.rmSync(path.join(root, 'kubelet.slice'), { recursive: true });
  const cgroupfs = made(`kubepods/besteffort/pod${UID}`);
  assert.equal(cgroupLookupUnder(root)(UID), cgroupfs);
  assert.equal(cgroupLookupUnder(root)(other), undefined);
  assert.equal(cgroupLookupUnder(root)('../../etc'), undefined, 'only a uid is looked up');
});

describe('ambit cni install / uninstall', () => {
  const dir = cleanup.tempDir('ambit-cni-install');
  const confDir = path.join(dir, 'net.d');
  const binDir = path.join(dir, 'bin');
  const pluginDir = path.resolve(__dirname, '../../src/cni');
  const bridge = {
    cniVersion: '1.0.0',
    name: 'k8s',
    plugins: [
      { type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local' } },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  const read = (f: string): { plugins: { type: string }[] } => JSON.parse(fs.readFileSync(path.join(confDir, f), 'utf8'));

  test('adds itself at the end of the first conflist and the plugin to the bin dir; again changes nothing', () => {
    fs.mkdirSync(confDir, { recursive: true });
    fs.writeFileSync(path.join(confDir, '10-k8s.conflist'), JSON.stringify(bridge));
    fs.writeFileSync(path.join(confDir, '20-other.conflist'), JSON.stringify({ ...bridge, name: 'other' }));
    fs.writeFileSync(path.join(confDir, 'README'), 'not a network');
    const first = install({ confDir, binDir, nodeBin: process.execPath, pluginDir, socket: '/run/a.sock' });
    assert.deepEqual(
      first.map((c) => [path.basename(c.file), c.what]),
      [
        ['plugin.js', 'added'],
        ['protocol.js', 'added'],
        ['ambit-cni', 'added'],
        ['10-k8s.conflist', 'added'],
      ],
    );
    assert.deepEqual(read('10-k8s.conflist').plugins, [...bridge.plugins, { type: 'ambit-cni', socket: '/run/a.sock' }]);
    assert.deepEqual(read('20-other.conflist').plugins, bridge.plugins, 'only the first conflist');
    const again = install({ confDir, binDir, nodeBin: process.execPath, pluginDir, socket: '/run/a.sock' });
    assert.deepEqual(
      again.map((c) => c.what),
      ['unchanged', 'unchanged', 'unchanged', 'unchanged'],
    );
    assert.equal(fs.statSync(path.join(binDir, 'ambit-cni')).mode & 0o777, 0o755);
    assert.equal(fs.readdirSync(confDir).filter((f) => f.endsWith('.tmp')).length, 0);
  });

  test('the installed plugin runs on its own (no checkout needed)', async () => {
    const r = await new Promise<string>((resolve, reject) =>
      execFile(path.join(binDir, 'ambit-cni'), [], { env: { CNI_COMMAND: 'VERSION' } }, (err, out) => (err ? reject(err) : resolve(out))),
    );
    assert.match(r, /"supportedVersions":\["0.3.0","0.3.1","0.4.0","1.0.0"\]/);
  });

  test('a moved entry goes back to the end, once', () => {
    const doc = read('10-k8s.conflist');
    doc.plugins = [{ type: 'ambit-cni' }, ...doc.plugins.filter((p) => p.type !== 'ambit-cni'), { type: 'ambit-cni' }];
    fs.writeFileSync(path.join(confDir, '10-k8s.conflist'), JSON.stringify(doc));
    const c = install({ confDir, binDir, nodeBin: process.execPath, pluginDir });
    assert.equal(c.at(-1)?.what, 'updated');
    assert.deepEqual(read('10-k8s.conflist').plugins, [...bridge.plugins, { type: 'ambit-cni' }]);
  });

  test('uninstall takes out exactly what install put in', () => {
    const c = uninstall({ confDir, binDir });
    assert.deepEqual(
      c.map((x) => [path.basename(x.file), x.what]),
      [
        ['10-k8s.conflist', 'removed'],
        ['ambit-cni', 'removed'],
        ['ambit-cni.d', 'removed'],
      ],
    );
    assert.deepEqual(read('10-k8s.conflist').plugins, bridge.plugins);
    assert.deepEqual(fs.readdirSync(binDir), []);
    assert.deepEqual(uninstall({ confDir, binDir }), [], 'nothing left to remove');
  });

  test('a single-plugin .conf first is refused with what to do', () => {
    fs.writeFileSync(path.join(confDir, '05-single.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'x', type: 'bridge' }));
    assert.throws(
      () => install({ confDir, binDir, nodeBin: process.execPath, pluginDir }),
      /05-single\.conf is a single-plugin configuration/,
    );
    assert.deepEqual(fs.existsSync(binDir) ? fs.readdirSync(binDir) : [], [], 'nothing installed');
  });
});

test('`ambit cni` installs and uninstalls from the command line; a mistake is a usage error', async () => {
  const dir = cleanup.tempDir('ambit-cni-cli');
  const confDir = path.join(dir, 'net.d');
  fs.mkdirSync(confDir);
  fs.writeFileSync(path.join(confDir, '10-net.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'ptp' }] }));
  const cli = (...args: string[]): Promise<{ code: number; out: string; err: string }> =>
    new Promise((resolve) =>
      execFile(process.execPath, [path.resolve(__dirname, '../../src/cli/main.js'), 'cni', ...args], (e, out, err) =>
        resolve({ code: e ? Number(e.code) : 0, out, err }),
      ),
    );
  const bin = path.join(dir, 'bin');
  const installed = await cli('install', '--conf-dir', confDir, '--bin-dir', bin);
  assert.equal(installed.code, 0, installed.err);
  assert.match(installed.out, /^added +.*10-net\.conflist$/m);
  assert.match((await cli('install', '--conf-dir', confDir, '--bin-dir', bin)).out, /^unchanged +.*10-net\.conflist$/m);
  const removed = await cli('uninstall', '--conf-dir', confDir, '--bin-dir', bin);
  assert.match(removed.out, /^removed +.*10-net\.conflist$/m);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(confDir, '10-net.conflist'), 'utf8')).plugins, [{ type: 'ptp' }]);
  const wrong = await cli('instal');
  assert.equal(wrong.code, 2);
  assert.match(wrong.err, /unknown cni command "instal"/);
  const missing = await cli('install', '--conf-dir', path.join(dir, 'nope'), '--bin-dir', path.join(dir, 'bin2'));
  assert.equal(missing.code, 2);
  assert.match(missing.err, /AMBIT_E_CONFIG: --conf-dir .*nope: ENOENT/);
  assert.equal(fs.existsSync(path.join(dir, 'bin2')), false, 'nothing installed');
});
