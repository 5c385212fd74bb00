// Gateway API filters on requests and responses, and the response flags as
// Envoy prints them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyRewrite, modifyHeaders, redirect, rewritePath } from '../../src/waypoint/filters';
import { ENVOY_DEFAULT_BUCKETS, formatFlags, RESPONSE_FLAGS } from '../../src/waypoint/flags';

test("ReplacePrefixMatch follows Gateway API's table", () => {
  const rows: [string, string, string, string][] = [
    ['/foo/bar', '/foo', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo', '/xyz/', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'],
    ['/foo', '/foo', '/xyz', '/xyz'],
    ['/foo/', '/foo', '/xyz', '/xyz/'],
    ['/foo/bar', '/foo', '', '/bar'],
    ['/foo/', '/foo', '', '/'],
    ['/foo', '/foo', '', '/'],
    ['/foo/', '/foo', '/', '/'],
    ['/foo', '/foo', '/', '/'],
    ['/a/b', '/', '/x', '/x/a/b'],
  ];
  for (const [path, prefix, replacement, want] of rows)
    assert.equal(
      rewritePath(path, { type: 'PathPrefix', value: prefix }, { type: 'ReplacePrefixMatch', value: replacement }),
      want,
      `${path} ${prefix} ${replacement}`,
    );
  assert.equal(rewritePath('/anything', { type: 'Exact', value: '/anything' }, { type: 'ReplaceFullPath', value: '/new' }), '/new');
});

test('URLRewrite keeps the query and may set the host', () => {
  assert.deepEqual(
    applyRewrite(
      '/v1/items?id=3',
      { type: 'PathPrefix', value: '/v1' },
      { type: 'URLRewrite', hostname: 'items.prod', path: { type: 'ReplacePrefixMatch', value: '/v2' } },
    ),
    { target: '/v2/items?id=3', host: 'items.prod' },
  );
});

test('header modifiers: set replaces, add appends with ",", remove deletes, the input is left alone', () => {
  const input = { 'x-a': 'old', 'x-b': ['1', '2'], 'x-gone': 'bye' };
  const out = modifyHeaders(input, {
    set: [{ name: 'x-a', value: 'new' }],
    add: [
      { name: 'x-b', value: '3' },
      { name: 'x-c', value: 'c' },
    ],
    remove: ['x-gone'],
  });
  assert.deepEqual(out, { 'x-a': 'new', 'x-b': '1,2,3', 'x-c': 'c' });
  assert.equal(input['x-gone'], 'bye');
});

test('redirects: scheme, host, port and path as Gateway API derives them', () => {
  const req = { scheme: 'http' as const, host: 'shop.default:8080', port: 8080, target: '/old/cart?x=1' };
  const prefix = { type: 'PathPrefix' as const, value: '/old' };
  assert.deepEqual(redirect(req, prefix, { type: 'RequestRedirect', statusCode: 302 }), {
    status: 302,
    location: 'http://shop.default:8080/old/cart?x=1',
  });
  assert.deepEqual(redirect(req, prefix, { type: 'RequestRedirect', scheme: 'https', statusCode: 301 }), {
    status: 301,
    location: 'https://shop.default/old/cart?x=1',
  });
  assert.deepEqual(
    redirect(req, prefix, {
      type: 'RequestRedirect',
      hostname: 'new.shop',
      port: 80,
      path: { type: 'ReplacePrefixMatch', value: '/new' },
      statusCode: 308,
    }),
    { status: 308, location: 'http://new.shop/new/cart?x=1' },
  );
});

test('response flags print as Envoy prints them: "-" for none, comma-separated, each once', () => {
  assert.equal(formatFlags([]), '-');
  assert.equal(formatFlags([RESPONSE_FLAGS.UF, RESPONSE_FLAGS.URX, RESPONSE_FLAGS.UF]), 'UF,URX');
  assert.equal(ENVOY_DEFAULT_BUCKETS.length, 19);
  assert.equal(ENVOY_DEFAULT_BUCKETS[0], 0.5);
  assert.equal(ENVOY_DEFAULT_BUCKETS.at(-1), 3_600_000);
});
