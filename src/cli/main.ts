#!/usr/bin/env node
// `ambit` — one binary, subcommands:
//   ambit node --config FILE --node NAME [--pods-cgroup DIR] [--pin-dir DIR]
//   ambit datapath probe|status|cleanup [--pin-dir DIR] [--json]
import { parseArgs } from 'node:util';
import { NodeApp } from '../app';
import { DEFAULT_PIN_DIR } from '../datapath/loader';
import { formatFindings, probe } from '../datapath/probe';
import { cleanupDatapath, datapathStatus } from '../datapath/status';
import { AmbitError } from '../errors';
import { createLogger } from '../observability/log';
import { loadConfigFile } from '../state/config';

const USAGE = `usage:
  ambit node --config FILE --node NAME [--pods-cgroup DIR] [--pin-dir DIR]
  ambit datapath probe   [--pin-dir DIR]
  ambit datapath status  [--pin-dir DIR] [--json]
  ambit datapath cleanup [--pin-dir DIR]`;

function node(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, node: { type: 'string' }, 'pods-cgroup': { type: 'string' }, 'pin-dir': { type: 'string' } },
  });
  if (!values.config || !values.node) throw new AmbitError('AMBIT_E_CONFIG', '--config and --node are required', USAGE);
  const log = createLogger();
  const app = NodeApp.start({
    config: loadConfigFile(values.config),
    nodeName: values.node,
    podsCgroup: values['pods-cgroup'],
    pinDir: values['pin-dir'],
    log,
  });
  log.info({ node: values.node, pods: app.enrolment.list().length }, 'node ready');
  const stop = (signal: string): void => {
    log.info({ signal }, 'stopping');
    app.stop();
    process.exit(0);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

function datapath(argv: string[]): void {
  const [verb, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { 'pin-dir': { type: 'string' }, json: { type: 'boolean' } } });
  const pinDir = values['pin-dir'] ?? DEFAULT_PIN_DIR;
  switch (verb) {
    case 'probe': {
      const findings = probe(pinDir);
      console.log(formatFindings(findings));
      if (findings.some((f) => !f.ok)) process.exitCode = 1;
      return;
    }
    case 'status': {
      const s = datapathStatus(pinDir);
      if (values.json) {
        console.log(JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2));
        return;
      }
      console.log(`pin directory ${s.pinDir}`);
      if (!s.links.length) console.log('  nothing attached');
      for (const l of s.links) console.log(`  ${l.pin.padEnd(28)} link ${String(l.linkId).padEnd(5)} prog ${l.program} (id ${l.progId}, tag ${l.tag}) → ${l.target}`);
      console.log(`enrolled pods: ${s.enrolledCgroups}; captured addresses: ${Object.keys(s.podAddrs).join(', ') || 'none'}`);
      if (s.counters) for (const [k, v] of Object.entries(s.counters)) if (v > 0n) console.log(`  ${k.padEnd(28)} ${v}`);
      return;
    }
    case 'cleanup': {
      const removed = cleanupDatapath(pinDir);
      console.log(removed.length ? `removed ${removed.length} pins under ${pinDir}: ${removed.join(', ')}` : `nothing pinned under ${pinDir}`);
      return;
    }
    default:
      throw new AmbitError('AMBIT_E_CONFIG', `unknown datapath command ${JSON.stringify(verb ?? '')}`, USAGE);
  }
}

function main(argv: string[]): void {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'node': return node(rest);
    case 'datapath': return datapath(rest);
    case undefined: case '-h': case '--help': console.log(USAGE); return;
    default: throw new AmbitError('AMBIT_E_CONFIG', `unknown command ${JSON.stringify(cmd)}`, USAGE);
  }
}

try {
  main(process.argv.slice(2));
} catch (err) {
  if (err instanceof AmbitError) {
    console.error(`ambit: ${err.code}: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
