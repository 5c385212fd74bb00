// Installing ambit-cni on a node, as istio-cni does: the plugin goes into
// the runtime's CNI bin directory, and an {"type": "ambit-cni"} entry at the
// end of the plugins of the node's network configuration (the first file
// in the conf directory: the one the runtime uses). Both steps are
// idempotent and atomic (a runtime reading the directory at any moment sees
// the old file or the new one); uninstall removes exactly what install added.
import fs from 'node:fs';
import path from 'node:path';
import { AmbitError } from '../errors';

export const PLUGIN_TYPE = 'ambit-cni';

export interface InstallOptions {
  confDir: string;
  binDir: string;
  /** The agent's socket, when not the plugin's default. */
  socket?: string;
  /** The Node.js binary the plugin runs on, as the host sees it. */
  nodeBin: string;
  /** Where the built plugin is (dist/src/cni): plugin.js and protocol.js are copied from there. */
  pluginDir: string;
}

export interface Change {
  file: string;
  what: 'added' | 'updated' | 'unchanged' | 'removed';
}

/** The network configuration the runtime uses: the first .conf/.conflist/.json by name, as containerd and CRI-O pick it. */
export function firstNetworkConfig(confDir: string): string | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(confDir);
  } catch (err) {
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `--conf-dir ${confDir}: ${(err as NodeJS.ErrnoException).code}`,
      'give the CNI configuration directory (/etc/cni/net.d)',
    );
  }
  const first = names.filter((n) => /\.(conflist|conf|json)$/.test(n)).sort()[0];
  return first && path.join(confDir, first);
}

type Conflist = { plugins?: Record<string, unknown>[] } & Record<string, unknown>;

function readConflist(file: string): Conflist {
  let doc: Conflist;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8')) as Conflist;
  } catch (err) {
    throw new AmbitError('AMBIT_E_CONFIG', `${file} is not JSON: ${(err as Error).message}`, 'fix or remove the file');
  }
  if (!Array.isArray(doc?.plugins))
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `${file} is a single-plugin configuration (no "plugins" list): ambit-cni can only be chained into a conflist`,
      'turn it into a .conflist ({"cniVersion", "name", "plugins": [<the plugin>]}) first',
    );
  return doc;
}

/** Puts the plugin in binDir and its entry at the end of the first conflist's plugins. */
export function install(o: InstallOptions): Change[] {
  // The configuration is checked first: a node it cannot be chained into gets nothing installed.
  const file = firstNetworkConfig(o.confDir);
  if (!file)
    throw new AmbitError(
      'AMBIT_E_CONFIG',
      `no network configuration in ${o.confDir}`,
      'install the network plugin (bridge, calico, …) first',
    );
  const doc = readConflist(file);
  const changes: Change[] = [];
  const dir = path.join(o.binDir, `${PLUGIN_TYPE}.d`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const f of ['plugin.js', 'protocol.js'])
    changes.push(writeIfChanged(path.join(dir, f), fs.readFileSync(path.join(o.pluginDir, f), 'utf8'), 0o644));
  const wrapper = `#!/bin/sh\n# Installed by \`ambit cni install\`; removed by \`ambit cni uninstall\`.\nexec ${shellQuote(o.nodeBin)} ${shellQuote(path.join(dir, 'plugin.js'))} "$@"\n`;
  changes.push(writeIfChanged(path.join(o.binDir, PLUGIN_TYPE), wrapper, 0o755));

  const entry: Record<string, unknown> = { type: PLUGIN_TYPE, ...(o.socket ? { socket: o.socket } : {}) };
  const others = (doc.plugins ?? []).filter((p) => p?.type !== PLUGIN_TYPE);
  const next = { ...doc, plugins: [...others, entry] };
  const c = writeIfChanged(
    file,
    `${JSON.stringify(next, null, 2)}\n`,
    fs.statSync(file).mode & 0o777,
    JSON.stringify(doc) === JSON.stringify(next),
  );
  changes.push({ file, what: c.what === 'unchanged' ? 'unchanged' : others.length === doc.plugins?.length ? 'added' : 'updated' });
  return changes;
}

/** Removes the plugin's entry from every conflist in confDir, and the plugin from binDir. */
export function uninstall(o: { confDir: string; binDir: string }): Change[] {
  const changes: Change[] = [];
  for (const name of fs.readdirSync(o.confDir).filter((n) => /\.(conflist|json)$/.test(n))) {
    const file = path.join(o.confDir, name);
    let doc: Conflist;
    try {
      doc = JSON.parse(fs.readFileSync(file, 'utf8')) as Conflist;
    } catch {
      continue; // not ours to judge
    }
    if (!Array.isArray(doc?.plugins) || !doc.plugins.some((p) => p?.type === PLUGIN_TYPE)) continue;
    const next = { ...doc, plugins: doc.plugins.filter((p) => p?.type !== PLUGIN_TYPE) };
    writeIfChanged(file, `${JSON.stringify(next, null, 2)}\n`, fs.statSync(file).mode & 0o777);
    changes.push({ file, what: 'removed' });
  }
  for (const p of [path.join(o.binDir, PLUGIN_TYPE), path.join(o.binDir, `${PLUGIN_TYPE}.d`)]) {
    if (!fs.existsSync(p)) continue;
    fs.rmSync(p, { recursive: true, force: true });
    changes.push({ file: p, what: 'removed' });
  }
  return changes;
}

function writeIfChanged(file: string, text: string, mode: number, same?: boolean): Change {
  const unchanged = same ?? (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === text);
  if (unchanged) return { file, what: 'unchanged' };
  const existed = fs.existsSync(file);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
  return { file, what: existed ? 'updated' : 'added' };
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
