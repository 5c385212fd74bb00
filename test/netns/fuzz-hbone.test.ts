// Root: a seeded slice of `make fuzz`'s HBONE target. A mesh peer with a
// valid certificate sends random HTTP/2 frame sequences (CONNECTs good and
// bad, resets with every error code, zero and overflowing window updates,
// invalid SETTINGS, stray CONTINUATION, unknown and truncated frames) to a
// pod's :15008; the agent and its workers must keep the same pids, give
// back every fd, and keep carrying honest traffic. FUZZ_SEED and
// FUZZ_HBONE_INPUTS change the slice; a failure prints the seed and the
// sequences in flight.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HboneBed } from '../fuzz/hbone-bed';
import { fuzzHbone } from '../fuzz/hbone-fuzz';
import { requireRoot } from '../helpers/fixture';
import { must } from '../helpers/must';
import { TIME_SCALE, waitFor } from '../helpers/proc';

const SEED = Number(process.env.FUZZ_SEED ?? 0x11f00d);
const INPUTS = Number(process.env.FUZZ_HBONE_INPUTS ?? 1500);
/**
 * Fds the destination may hold above the count at the start once the campaign has settled: one per
 * 500 sequences, plus 2. In full suite runs one to three destination fds, held by no source session,
 * have outlived the wait (a TCP socket already closed but not yet released, as far as /proc and ss
 * tell; alone the count comes back exactly). A leak grows with the inputs (the one this slice found
 * held ~490 fds after 1,500 sequences): any leak of more than one fd per 300 sequences still fails,
 * and the failure lists every fd opened since the start.
 */
const FD_SLACK = 2 + Math.ceil(INPUTS / 500);

describe('HBONE inbound under fuzzed HTTP/2', () => {
  let bed: HboneBed | undefined;
  const theBed = (): HboneBed => must(bed, 'the bed (its creation failed)');

  before(async () => {
    requireRoot();
    bed = await HboneBed.create();
  });

  after(async () => {
    await bed?.destroy();
  });

  test(`${INPUTS} seeded frame sequences (seed ${SEED}): no crash, no leaked fd, honest traffic still flows`, {
    timeout: 240_000 * TIME_SCALE,
  }, async () => {
    const b = theBed();
    const pidsBefore = b.pids();
    const fdsBefore = b.destinationFds();
    const fdLinesBefore = new Set(b.destinationFdLines());
    const sessionsBefore = b.sourceSessions();
    const r = await fuzzHbone(b, { inputs: INPUTS, seed: SEED, stopOnCrash: true, honestEveryMs: 10_000 });
    const repro = `reproduce: FUZZ_SEED=${SEED} FUZZ_HBONE_INPUTS=${INPUTS} node --test dist/test/netns/fuzz-hbone.test.js`;
    assert.deepEqual(r.crashes, [], `a process died under fuzzing (${repro}): ${JSON.stringify(r.crashes, null, 2)}`);
    assert.equal(r.inputs, INPUTS);
    assert.deepEqual(b.pids(), pidsBefore, 'the same agent and worker pids (nothing crashed and was respawned)');
    // Sessions the fuzzer opened close on the server once their sockets do, and those
    // whose end the server could not read at the latest when PING goes unanswered
    // (keepalive 10 s + 20 s by default). The honest checks' pooled client sessions
    // (one or more per source worker, each one destination fd until its 5 min idle
    // timeout) are the tunnel working, not a leak: they are counted where they are
    // held, on the source side, at the start and at each poll.
    let fdsAfter = 0;
    let held = 0;
    await waitFor(
      `destination fds back to ${fdsBefore} (less the ${sessionsBefore} source sessions held then, plus those held now, plus ${FD_SLACK})`,
      () => {
        fdsAfter = b.destinationFds();
        held = b.sourceSessions();
        return fdsAfter <= fdsBefore - sessionsBefore + held + FD_SLACK;
      },
      120_000, // a few fuzzed sessions have closed only after 60–90 s on a loaded machine (open question)
      200,
    ).catch((err: Error) => {
      const appeared = b.destinationFdLines().filter((l) => !fdLinesBefore.has(l));
      assert.fail(`${err.message}: ${fdsAfter} open, ${held} source sessions (${repro}); fds new since the start:\n${appeared.join('\n')}`);
    });
    assert.ok(await b.honest(20), 'honest connections still succeed after the campaign');
    assert.equal(r.honestChecks.failed, 0, `honest traffic failed while fuzzing: ${JSON.stringify(r.honestChecks)}`);
    console.log(JSON.stringify({ seed: SEED, ...r, rate: Math.round(r.inputs / r.seconds), fdsBefore, fdsAfter }));
  });

  test('after teardown no namespace, cgroup, pin or process remains', async () => {
    const b = theBed();
    bed = undefined;
    await b.destroy(); // fails if anything of the bed remains
  });
});
