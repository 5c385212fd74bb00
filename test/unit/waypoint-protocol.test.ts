// The waypoint's choice of HTTP or TCP per service port (Istio's rule) and
// the headers it passes on (end-to-end only: what HTTP/2 forbids and what
// describes one hop's connection are dropped).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { speaksHttp } from '../../src/waypoint/server';
import { endToEnd } from '../../src/waypoint/upstream';

test('appProtocol decides first, then the port name prefix, then attached routes', () => {
  const p = (extra: { name?: string; appProtocol?: string }) => ({ port: 80, targetPort: 8080, ...extra });
  for (const appProtocol of ['http', 'HTTP2', 'grpc', 'grpc-web', 'h2c', 'kubernetes.io/h2c'])
    assert.equal(speaksHttp(p({ appProtocol }), false), true, appProtocol);
  assert.equal(speaksHttp(p({ appProtocol: 'tcp', name: 'http-web' }), true), false, 'appProtocol tcp wins over name and routes');
  for (const name of ['http', 'http-web', 'http2-api', 'grpc-x', 'GRPC']) assert.equal(speaksHttp(p({ name }), false), true, name);
  for (const name of ['https', 'httpx', 'tcp-db', 'web']) assert.equal(speaksHttp(p({ name }), false), false, name);
  assert.equal(speaksHttp(p({ name: 'web' }), true), true, 'an HTTPRoute says the port is HTTP');
  assert.equal(speaksHttp(p({}), false), false);
  assert.equal(speaksHttp(p({}), true), true);
});

test('endToEnd drops hop-by-hop headers, those connection names, pseudo-headers and te other than trailers', () => {
  assert.deepEqual(
    endToEnd({
      ':path': '/',
      host: 'a',
      connection: 'keep-alive, x-hop',
      'x-hop': '1',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      upgrade: 'h2c',
      'proxy-connection': 'x',
      te: 'gzip',
      'x-keep': 'yes',
      'set-cookie': ['a=1', 'b=2'],
    }),
    { 'x-keep': 'yes', 'set-cookie': ['a=1', 'b=2'] },
  );
  assert.deepEqual(endToEnd({ te: 'trailers', 'content-type': 'application/grpc' }), {
    te: 'trailers',
    'content-type': 'application/grpc',
  });
});
