// A watched configuration file: every kind of invalid change is reported and
// dropped, the last good state stays, and nothing a reload calls (parse,
// apply, report) can throw out of the watcher and end the process.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeTokens } from '../../src/control-plane/tokens';
import type { AmbitError } from '../../src/errors';
import { parseConfig } from '../../src/sources/config';
import { watchParsedFile } from '../../src/sources/file-source';
import type { MeshConfig } from '../../src/state/types';
import { BASE, HASH_B, once } from '../helpers/mesh-yaml';
import { waitFor } from '../helpers/proc';

const POLL_MS = 20;

describe('reloading the configuration file', () => {
  let dir: string;
  let file: string;
  let n = 0;
  const escaped: unknown[] = [];
  const onEscape = (err: unknown): void => {
    escaped.push(err);
  };

  /** Replaces the file as editors and ConfigMap mounts do (rename), so no poll sees it half-written. */
  const replace = (write: (tmp: string) => void): void => {
    const tmp = path.join(dir, `next-${n++}`);
    write(tmp);
    fs.renameSync(tmp, file);
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-reload-'));
    file = path.join(dir, 'mesh.yaml');
    // A throw out of the watcher's timer callback lands here instead of ending the test run unexplained.
    process.on('uncaughtException', onEscape);
  });
  after(() => {
    process.off('uncaughtException', onEscape);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('each kind of invalid file is reported and the last good config keeps serving', async () => {
    fs.writeFileSync(file, BASE);
    let current: MeshConfig = parseConfig(BASE, file);
    let tables = 0;
    const rejected: AmbitError[] = [];
    // Applies as the control plane does: the token table is built from the new file (NodeTokens throws on a duplicate hash).
    const apply = (cfg: MeshConfig): void => {
      new NodeTokens(cfg.controlPlane.tokens);
      tables++;
      current = cfg;
    };
    const stop = watchParsedFile(file, parseConfig, apply, (err) => rejected.push(err), POLL_MS);
    try {
      const good = current;
      const kinds: [string, (tmp: string) => void, RegExp][] = [
        ['a typo', (t) => fs.writeFileSync(t, once(BASE, 'policies:', 'polices:')), /polices: unknown field; did you mean `policies`\?/],
        [
          'duplicate token hashes',
          (t) => fs.writeFileSync(t, once(BASE, `sha256: ${HASH_B}`, `sha256: ${'a'.repeat(64)}`)),
          /controlPlane\.tokens\[1\]\.sha256: duplicates/,
        ],
        [
          'a duplicate pod address',
          (t) => fs.writeFileSync(t, once(BASE, 'addresses: [10.200.0.20]', 'addresses: [10.200.0.10]')),
          /pod addresses must be unique/,
        ],
        ['broken YAML', (t) => fs.writeFileSync(t, `${BASE}\n  - [`), /is not valid YAML/],
        [
          'nesting too deep',
          (t) => fs.writeFileSync(t, `${BASE}\nx: ${'['.repeat(5000)}${']'.repeat(5000)}\n`),
          /is not valid YAML: nested (too deeply|deeper than)/,
        ],
        [
          'an alias bomb',
          (t) => {
            let bomb = 'a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
            for (let i = 1; i < 9; i++)
              bomb += `a${i}: &a${i} [${Array(9)
                .fill(`*a${i - 1}`)
                .join(', ')}]\n`;
            fs.writeFileSync(t, `${bomb}policies: *a8\n`);
          },
          /aliases \(\*name\) expand to more than/,
        ],
        [
          'a file over the size limit',
          (t) => {
            fs.writeFileSync(t, '');
            fs.truncateSync(t, 64 * 1024 * 1024);
          },
          /is 64\.0 MiB, over the limit of 16\.0 MiB/,
        ],
      ];
      for (const [what, write, want] of kinds) {
        const seen = rejected.length;
        replace(write);
        const err = await waitFor(`${what} to be rejected`, () => rejected[seen], 10_000);
        assert.equal(err.code, 'AMBIT_E_CONFIG', what);
        assert.match(err.message, want, what);
        assert.equal(current, good, `${what}: the last good configuration still serves`);
        assert.deepEqual(escaped, [], `${what}: nothing escaped the watcher`);
      }
      // The same bad content again is not reported twice; a valid change is applied.
      replace((t) => fs.writeFileSync(t, once(BASE, '    capacity: 1', '    capacity: 5')));
      await waitFor('a valid change to be applied', () => current !== good, 10_000);
      assert.equal(current.workloads[0]?.capacity, 5);
      assert.equal(tables, 1, 'only the valid change reached apply');
      assert.equal(rejected.length, kinds.length);
    } finally {
      stop();
    }
  });

  test('a change made the moment the watch starts is not missed', async () => {
    fs.writeFileSync(file, BASE);
    let applied: MeshConfig | undefined;
    const stop = watchParsedFile(
      file,
      parseConfig,
      (cfg) => {
        applied = cfg;
      },
      () => undefined,
      POLL_MS,
    );
    try {
      replace((t) => fs.writeFileSync(t, once(BASE, '    capacity: 1', '    capacity: 7')));
      const cfg = await waitFor('the change to be applied', () => applied, 10_000);
      assert.equal(cfg.workloads[0]?.capacity, 7);
    } finally {
      stop();
    }
  });

  test('an apply that throws, or a reporter that throws, does not leave the watcher', async () => {
    fs.writeFileSync(file, BASE);
    const reported: AmbitError[] = [];
    const stop = watchParsedFile(
      file,
      parseConfig,
      () => {
        throw new Error('apply failed half-way');
      },
      (err) => reported.push(err),
      POLL_MS,
    );
    const reported2: AmbitError[] = [];
    const stop2 = watchParsedFile(
      file,
      parseConfig,
      () => undefined,
      (err) => {
        reported2.push(err);
        throw new Error('the log is closed');
      },
      POLL_MS,
    );
    try {
      replace((t) => fs.writeFileSync(t, once(BASE, '    capacity: 1', '    capacity: 2')));
      const err = await waitFor('the failed apply to be reported', () => reported[0], 10_000);
      assert.equal(err.code, 'AMBIT_E_CONFIG');
      assert.match(err.message, /mesh\.yaml could not be applied: apply failed half-way/);
      replace((t) => fs.writeFileSync(t, once(BASE, 'policies:', 'polices:')));
      await waitFor('the rejection to reach the throwing reporter', () => reported2[0], 10_000);
      // The throwing reporter ran inside the poll: had it escaped, it would be here by now.
      await waitFor('the other watcher to have seen the change too', () => reported[1], 10_000);
      assert.deepEqual(escaped, []);
    } finally {
      stop();
      stop2();
    }
  });
});
