// The Vagrant cluster (Vagrantfile, scripts/provision-k8s.sh) cannot run on
// the development machine: no VMs. What can be checked is: both scripts
// parse (bash -n) and pass shellcheck, the Vagrantfile parses (ruby -c) and,
// evaluated against a stand-in for Vagrant, describes two Debian 12 nodes
// provisioned by scripts/install-deps.sh — the script CI runs — and then
// scripts/provision-k8s.sh with the right arguments. A missing tool is a
// failure that names its Debian package, never a skip.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { must } from '../helpers/must';
import { lastJson } from '../helpers/proc';

const ROOT = path.resolve(__dirname, '../../..');
const SCRIPTS = ['scripts/install-deps.sh', 'scripts/provision-k8s.sh'];

/** Runs a tool; fails (naming the Debian package) when it is not installed. */
function run(tool: string, pkg: string, args: string[], opts: { input?: string; cwd?: string } = {}): { status: number; out: string } {
  const r = spawnSync(tool, args, { cwd: opts.cwd ?? ROOT, input: opts.input, encoding: 'utf8' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    assert.fail(`${tool} is not installed: apt-get install ${pkg} (scripts/install-deps.sh lists it)`);
  }
  if (r.error) throw r.error;
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

test('the provisioning scripts parse (bash -n) and a broken one does not', () => {
  for (const s of SCRIPTS) {
    const r = run('bash', 'bash', ['-n', s]);
    assert.equal(r.status, 0, `bash -n ${s}: ${r.out}`);
  }
  assert.notEqual(run('bash', 'bash', ['-n'], { input: 'if true; then\n  echo unclosed\n' }).status, 0, 'bash -n rejects an unclosed if');
});

test('the provisioning scripts pass shellcheck, which does catch a real mistake', () => {
  for (const s of SCRIPTS) {
    const r = run('shellcheck', 'shellcheck', ['--shell=bash', s]);
    assert.equal(r.status, 0, `shellcheck ${s}:\n${r.out}`);
  }
  const bad = run('shellcheck', 'shellcheck', ['--shell=bash', '-'], { input: '#!/usr/bin/env bash\nrm -rf $1/*\n' });
  assert.notEqual(bad.status, 0, 'shellcheck flags an unquoted expansion');
  assert.match(bad.out, /SC2086/);
});

test('the Vagrantfile is valid Ruby (ruby -c), and broken Ruby is not', () => {
  const r = run('ruby', 'ruby', ['-c', 'Vagrantfile']);
  assert.equal(r.status, 0, `ruby -c Vagrantfile: ${r.out}`);
  assert.notEqual(run('ruby', 'ruby', ['-c', '-'], { input: 'Vagrant.configure("2") do |config|\n' }).status, 0);
});

// Evaluates the Vagrantfile with a recorder in place of Vagrant: every call
// and assignment on `config` (and on what it hands to blocks) is logged.
const RECORDER = `
require "json"
class Recorder
  def initialize(path, log)
    @path, @log = path, log
  end
  def method_missing(name, *args, **kw, &blk)
    n = name.to_s
    if n.end_with?("=")
      @log << { "path" => @path + [n.chomp("=")], "set" => args[0] }
      return args[0]
    end
    @log << { "path" => @path + [n], "args" => args, "kw" => kw.transform_keys(&:to_s) }
    child = Recorder.new(@path + [n] + args.map(&:to_s), @log)
    blk.call(child) if blk
    child
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  LOG = []
  def self.configure(version)
    raise "configure(#{version.inspect})" unless version == "2"
    yield Recorder.new([], LOG)
  end
end
load ARGV.fetch(0)
puts JSON.generate(Vagrant::LOG)
`;

interface Call {
  path: string[];
  args?: unknown[];
  kw?: Record<string, unknown>;
  set?: unknown;
}

function evaluateVagrantfile(): Call[] {
  // A copy in a temporary directory: the Vagrantfile keeps its kubeadm token in .vagrant/ beside itself.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-vagrant-'));
  try {
    fs.copyFileSync(path.join(ROOT, 'Vagrantfile'), path.join(dir, 'Vagrantfile'));
    fs.writeFileSync(path.join(dir, 'recorder.rb'), RECORDER);
    const r = run('ruby', 'ruby', ['recorder.rb', 'Vagrantfile'], { cwd: dir });
    assert.equal(r.status, 0, `evaluating the Vagrantfile: ${r.out}`);
    return lastJson<Call[]>(r.out);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('the Vagrantfile: two Debian 12 nodes, each provisioned by install-deps.sh (as CI) and then provision-k8s.sh', () => {
  const calls = evaluateVagrantfile();
  const set = (...p: string[]): unknown => calls.find((c) => 'set' in c && c.path.join('/') === p.join('/'))?.set;
  assert.equal(set('vm', 'box'), 'debian/bookworm64');
  for (const provider of ['virtualbox', 'libvirt']) {
    const prefix = calls.find((c) => c.path.join('/') === 'vm/provider' && c.args?.[0] === provider);
    assert.ok(prefix, `provider ${provider}`);
  }
  assert.equal(set('vm', 'provider', 'virtualbox', 'cpus'), 2);
  assert.equal(set('vm', 'provider', 'virtualbox', 'memory'), 4096);
  const synced = calls.filter((c) => c.path.join('/') === 'vm/synced_folder');
  assert.ok(
    synced.some((c) => c.args?.[0] === '.' && c.args?.[1] === '/ambit'),
    'the repository is at /ambit in the VMs',
  );

  const nodes = calls.filter((c) => c.path.join('/') === 'vm/define').map((c) => String(c.args?.[0]));
  assert.deepEqual(nodes, ['node-1', 'node-2']);
  const ips: Record<string, string> = {};
  let token = '';
  for (const node of nodes) {
    const within = calls.filter((c) => c.path.slice(0, 3).join('/') === `vm/define/${node}`);
    const net = within.find((c) => c.path.slice(3).join('/') === 'vm/network');
    assert.equal(net?.args?.[0], 'private_network');
    ips[node] = String(net?.kw?.ip);
    assert.equal(within.find((c) => c.path.slice(3).join('/') === 'vm/hostname')?.set, node);

    const provisioners = within
      .filter((c) => c.path.slice(3).join('/') === 'vm/provision')
      .map((c) => ({ name: String(c.args?.[0]), ...c.kw }) as Record<string, string>);
    const always = provisioners.filter((p) => p.run !== 'never');
    for (const p of provisioners) assert.equal(p.type, 'shell');
    // install-deps.sh from the repository checkout (it cds to the repository and runs npm ci there), before Kubernetes.
    const deps = always.findIndex((p) => p.inline?.trim() === 'bash /ambit/scripts/install-deps.sh');
    const k8s = always.findIndex((p) => /^bash \/ambit\/scripts\/provision-k8s\.sh (init|join) /.test(p.inline ?? ''));
    assert.ok(deps >= 0, `${node} runs scripts/install-deps.sh`);
    assert.ok(k8s > deps, `${node} runs scripts/provision-k8s.sh after install-deps.sh`);
    assert.ok(
      always.slice(0, deps).every((p) => /nodesource|node -p/.test(p.inline ?? '')),
      'only Node.js (which install-deps.sh requires) comes before it',
    );
    const args = (always[k8s]?.inline ?? '').split(/\s+/).slice(2);
    if (node === 'node-1') {
      assert.deepEqual(args.slice(0, 2), ['init', ips[node]]);
      token = args[2] ?? '';
      const demo = provisioners.find((p) => p.name === 'demo');
      assert.equal(demo?.run, 'never', 'the demo runs on request, once both nodes are up');
      assert.equal(demo?.inline?.trim(), 'bash /ambit/scripts/provision-k8s.sh demo');
    } else {
      assert.deepEqual(args.slice(0, 3), ['join', ips[node], ips['node-1']]);
      assert.equal(args[3], token, 'both nodes share the kubeadm token');
    }
  }
  assert.deepEqual(ips, { 'node-1': '192.168.56.11', 'node-2': '192.168.56.12' });
  assert.match(token, /^[a-z0-9]{6}\.[a-z0-9]{16}$/, 'a kubeadm bootstrap token');
});

test('provision-k8s.sh applies the Vagrant overlay with the image it builds, and pins its versions', () => {
  const script = fs.readFileSync(path.join(ROOT, 'scripts/provision-k8s.sh'), 'utf8');
  const value = (name: string): string => {
    const m = new RegExp(`^${name}=(\\S+)`, 'm').exec(script);
    return must(m?.[1], `${name}= in provision-k8s.sh`);
  };
  const overlay = value('OVERLAY');
  assert.ok(fs.existsSync(path.join(ROOT, overlay, 'kustomization.yaml')), `${overlay} is a kustomization`);
  assert.match(script, /kubectl apply -k "\$\{OVERLAY\}"/);
  const k = YAML.parse(fs.readFileSync(path.join(ROOT, overlay, 'kustomization.yaml'), 'utf8'));
  const image = k.images.find((i: { newName?: string }) => i.newName);
  assert.equal(value('IMAGE'), `${image.newName}:${image.newTag}`, 'the image built and imported is the one the overlay runs');
  assert.match(script, /buildah bud [^\n]*-f Dockerfile/);
  assert.match(script, /ctr -n k8s\.io images import/);
  assert.match(value('KUBERNETES_MINOR'), /^v1\.\d+$/);
  assert.match(value('FLANNEL_URL'), /\/download\/v\d+\.\d+\.\d+\//, 'a pinned flannel release');
  // The CA as daemonset/README.md tells operators to create it.
  assert.match(script, /create secret generic ambit-ca --from-file=/);
  assert.match(script, /create configmap ambit-ca-root --from-file=root-cert\.pem=/);
  assert.match(script, /kubectl label namespace demo ambit\.dev\/mode=ambient/);
});
