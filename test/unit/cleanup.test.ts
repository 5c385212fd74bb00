// The teardown every root test relies on: steps undone newest first, all of
// them even when some throw, every failure named, a process killed and
// waited for, and nothing run twice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';
import { Cleanup } from '../helpers/cleanup';

test('steps run newest first; every one runs when some throw, and the error names each failure', async () => {
  const cleanup = new Cleanup();
  const ran: string[] = [];
  cleanup.add('first', () => {
    ran.push('first');
  });
  cleanup.add('second', () => {
    ran.push('second');
    throw new Error('boom');
  });
  cleanup.add('third', async () => {
    ran.push('third');
    await Promise.reject(new Error('bang'));
  });
  cleanup.add('fourth', () => {
    ran.push('fourth');
  });
  await assert.rejects(cleanup.run(), (err: AggregateError) => {
    assert.match(err.message, /^teardown failed:\n- third: bang\n- second: boom$/);
    assert.equal(err.errors.length, 2);
    return true;
  });
  assert.deepEqual(ran, ['fourth', 'third', 'second', 'first']);
  await cleanup.run(); // done steps are not run again
  assert.equal(ran.length, 4);
});

test('a process is SIGKILLed and waited for; a temporary directory is removed with its contents', async () => {
  const cleanup = new Cleanup();
  const dir = cleanup.tempDir('ambit-cleanup-test');
  fs.writeFileSync(`${dir}/file`, 'x');
  // Ignores SIGTERM: only a SIGKILL ends it.
  const child = cleanup.process(spawn('bash', ['-c', "trap '' TERM; exec sleep 600"], { stdio: 'ignore' }));
  await cleanup.run();
  assert.equal(child.signalCode, 'SIGKILL', 'exited by SIGKILL before run() returned');
  assert.equal(fs.existsSync(dir), false);
});
