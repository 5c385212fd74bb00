// Root: the test bed's own teardown. A process a test starts in a node (an
// agent, a shell) may start others; when it dies first, those are orphans
// that no ChildProcess handle reaches. A `dd bs=1 count=32768` left reading
// a pipe nobody wrote to once outlived a run that way. destroy() must end
// them all, whichever namespace they were started in.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Cleanup, waitExit } from '../helpers/cleanup';
import { requireRoot, testBed } from '../helpers/fixture';
import { alive, waitForLine } from '../helpers/proc';
import type { Topology } from '../helpers/topology';

let topo: Topology;
const cleanup = new Cleanup();

before(async () => {
  requireRoot();
  ({ topo } = await testBed(cleanup, { nodes: 1, podsPerNode: 1 }));
});

after(() => cleanup.run());

test('destroy() ends what node, switch and pod processes started, even after those processes are gone', async () => {
  // Each shell starts a dd that waits on a pipe for good, prints its pid and exits: the dd is an orphan.
  const orphan = 'sleep infinity | dd bs=1 count=32768 of=/dev/null 2>/dev/null & echo $!; exit 0';
  const spawners = [
    () => topo.spawnInNode(topo.node(1), 'bash', ['-c', orphan]),
    () => topo.spawnInSwitch('bash', ['-c', orphan]),
    () => topo.spawnInPod(topo.pod(1, 1), 'bash', ['-c', orphan]),
  ];
  const pids: number[] = [];
  for (const spawn of spawners) {
    // Read from the start: Node discards what a child printed if nothing read it before it exited.
    const shell = spawn();
    pids.push(Number(await waitForLine(shell, (l) => /^\d+$/.test(l), 'the orphan dd pid')));
    await waitExit(shell);
  }
  assert.ok(
    pids.every((p) => p > 0 && alive(p)),
    `the dd processes outlived their shells: ${pids.join(', ')}`,
  );
  await cleanup.run();
  assert.deepEqual(pids.filter(alive), [], 'no dd left after the teardown');
});
