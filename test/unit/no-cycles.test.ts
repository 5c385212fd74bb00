// No import cycles in src/: each concept can be read (and tested) on top of
// what it uses, never in a loop with it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const SRC = path.resolve(__dirname, '../../../src');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/^import\s[^'"]*['"](\.[^'"]+)['"]/gm)].map((m) => `${path.resolve(path.dirname(file), m[1])}.ts`);
}

test('src/ has no import cycles', () => {
  const graph = new Map(sources(SRC).map((f) => [f, imports(f)]));
  assert.ok(graph.size > 10, 'found the sources');
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      const cycle = [...stack.slice(stack.indexOf(f)), f].map((x) => path.relative(SRC, x));
      assert.fail(`import cycle: ${cycle.join(' → ')}`);
    }
    state.set(f, 'open');
    stack.push(f);
    for (const dep of graph.get(f) ?? []) if (graph.has(dep)) visit(dep);
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f);
});
