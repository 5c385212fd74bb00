// For what a test's own set-up guarantees (the agent it started, the pipe it
// asked for, element 0 of a list it built): the value, or a failure naming
// what was missing, instead of a non-null assertion that would turn a broken
// set-up into a TypeError somewhere later.
import assert from 'node:assert/strict';

/** v, or a failed assertion naming what is missing. */
export function must<T>(v: T | null | undefined, what: string): T {
  if (v === undefined || v === null) assert.fail(`${what}: missing`);
  return v;
}

/** Element i of a list (negative: from the end), or a failed assertion naming the list and its length. */
export function at<T>(list: readonly T[], i: number, what: string): T {
  return must(list.at(i), `${what}[${i}] (of ${list.length})`);
}
