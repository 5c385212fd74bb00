// `ambit cni install|uninstall`: puts the ambit-cni plugin into a node's CNI
// bin directory and its entry into the node's conflist, or takes both out
// (src/cni/conflist.ts). Run on the node (the DaemonSet mounts the host's
// directories), once before the agent serves `--cni`.
import path from 'node:path';
import { type Change, install, uninstall } from '../cni/conflist';
import { parseFlags, UsageError } from './args';
import { CNI_USAGE } from './usage';

const OPTIONS = {
  'conf-dir': { type: 'string' },
  'bin-dir': { type: 'string' },
  socket: { type: 'string' },
  'node-bin': { type: 'string' },
} as const;

export function cni(argv: string[]): void {
  const [sub, ...rest] = argv;
  if (sub !== 'install' && sub !== 'uninstall') throw new UsageError(`unknown cni command ${JSON.stringify(sub ?? '')}`, CNI_USAGE);
  const { values } = parseFlags(rest, OPTIONS, CNI_USAGE);
  const confDir = values['conf-dir'] ?? '/etc/cni/net.d';
  const binDir = values['bin-dir'] ?? '/opt/cni/bin';
  let changes: Change[];
  if (sub === 'install') {
    changes = install({
      confDir,
      binDir,
      socket: values.socket,
      nodeBin: values['node-bin'] ?? process.execPath,
      pluginDir: path.resolve(__dirname, '../cni'),
    });
  } else {
    if (values.socket || values['node-bin']) throw new UsageError('uninstall takes only --conf-dir and --bin-dir', CNI_USAGE);
    changes = uninstall({ confDir, binDir });
  }
  for (const c of changes) console.log(`${c.what.padEnd(9)} ${c.file}`);
  if (!changes.length) console.log('nothing of ambit-cni was installed');
}
