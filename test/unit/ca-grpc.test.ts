// The certificate path over real gRPC and real TLS on 127.0.0.1: a node
// agent's IstioCaClient against the control plane's CreateCertificate
// handler, backed by a built-in CA in a temp directory. No root needed.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { caServiceHandlers } from '../../src/control-plane/ca-service';
import { type ServerCredentialsPem, serverCredentials } from '../../src/control-plane/tls';
import { NodeTokens } from '../../src/control-plane/tokens';
import { BuiltinCa } from '../../src/identity/builtin-ca';
import { IstioCaClient, type IstioCaClientOptions } from '../../src/identity/ca-client';
import { requestCertificate } from '../../src/identity/cert-manager';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../../src/protocol/messages';
import { grpcServices } from '../../src/protocol/protos';
import { csrWith, flipSignature } from '../helpers/csr-forge';
import { at, must } from '../helpers/must';

const ID_N1 = 'spiffe://cluster.local/ns/default/sa/sleep';
const ID_N2 = 'spiffe://cluster.local/ns/default/sa/httpbin';
const TOKEN_N1 = 'n1-token-7f3a9c';
const TOKEN_N2 = 'n2-token-41be02';
const TOKEN_N1_OLD = 'n1-token-revoked';
const MAX_TTL = 7200;

let dir: string;
let ca: BuiltinCa;
let creds: ServerCredentialsPem;
let server: grpc.Server;
let port: number;
const logLines: { level: number; msg: string; [k: string]: unknown }[] = [];

const tokenFile = (name: string, token: string): string => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, `${token}\n`);
  return f;
};

function serverTls(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(
    Buffer.from(creds.rootPem),
    [{ cert_chain: Buffer.from(creds.certPem), private_key: Buffer.from(creds.keyPem) }],
    false,
  );
}

function serve(impl: grpc.UntypedServiceImplementation): Promise<{ server: grpc.Server; port: number }> {
  const s = new grpc.Server();
  s.addService(grpcServices().ca.service, impl);
  return new Promise((resolve, reject) =>
    s.bindAsync('127.0.0.1:0', serverTls(), (err, p) => (err ? reject(err) : resolve({ server: s, port: p }))),
  );
}

function client(opts: Partial<IstioCaClientOptions> & { tokenFile?: string }, p = port): IstioCaClient {
  return new IstioCaClient({
    address: `127.0.0.1:${p}`,
    rootsPem: creds.rootPem,
    serverName: 'ambit-control-plane.ambit-system.svc',
    ...opts,
  });
}

/** A fresh CSR as the certificate manager would send, through a recording CA. */
async function csrFor(identity: string): Promise<string> {
  let csr = '';
  await requestCertificate(
    {
      sign: async (c, id, ttl) => {
        csr = c;
        return ca.sign(c, id, ttl);
      },
    },
    identity,
    60,
  );
  return csr;
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambit-ca-grpc-'));
  ca = await BuiltinCa.open(path.join(dir, 'ca'));
  creds = await serverCredentials(ca, { dns: [], ips: ['127.0.0.1'] });
  const log = pino(
    { level: 'info' },
    {
      write: (line: string) => {
        logLines.push(JSON.parse(line));
      },
    },
  );
  const placement: Record<string, string[]> = { n1: [ID_N1], n2: [ID_N2] };
  ({ server, port } = await serve(
    caServiceHandlers({
      ca,
      tokens: new NodeTokens([
        { node: 'n1', sha256: NodeTokens.hash(TOKEN_N1) },
        { node: 'n2', sha256: NodeTokens.hash(TOKEN_N2) },
      ]),
      identitiesOn: (who) => new Set('node' in who ? (placement[who.node] ?? []) : []),
      maxTtlSeconds: MAX_TTL,
      log,
    }),
  ));
});

after(() => {
  server?.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the Struct metadata round-trips through the wire encoding', () => {
  const m = must(grpcServices().ca.service.CreateCertificate, 'the CreateCertificate method');
  const req: IstioCertificateRequest = {
    csr: 'x',
    validity_duration: 60,
    metadata: { fields: { ImpersonatedIdentity: { stringValue: ID_N1 } } },
  };
  const back = m.requestDeserialize(m.requestSerialize(req)) as IstioCertificateRequest;
  assert.equal((back.metadata?.fields.ImpersonatedIdentity as { stringValue: string } | undefined)?.stringValue, ID_N1);
  assert.equal(back.validity_duration, 60);
});

test('the server certificate names the control plane, localhost and the IPs; serverAuth only', () => {
  const leaf = new X509Certificate(creds.certPem);
  assert.equal(leaf.subjectAltName, 'DNS:ambit-control-plane.ambit-system.svc, DNS:localhost, IP Address:127.0.0.1');
  assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.ok(leaf.verify(new X509Certificate(ca.rootPem).publicKey));
  assert.equal(creds.rootPem, ca.rootPem);
});

test('n1 gets a certificate for an identity on n1, chained to the built-in root', async () => {
  const c = client({ tokenFile: tokenFile('n1-ok', TOKEN_N1) });
  try {
    logLines.length = 0;
    const cert = await requestCertificate(c, ID_N1, 3600);
    const leaf = new X509Certificate(cert.chainPem);
    assert.equal(leaf.subjectAltName, `URI:${ID_N1}`);
    assert.equal(cert.rootsPem.trim(), ca.rootPem.trim());
    assert.equal(cert.chainPem.match(/BEGIN CERTIFICATE/g)?.length, 1);
    assert.ok(leaf.verify(new X509Certificate(cert.rootsPem).publicKey));
    const hours = (cert.notAfter.getTime() - Date.now()) / 3600_000;
    assert.ok(hours > 0.99 && hours <= 1, `lifetime ${hours} h`);
    assert.ok(
      logLines.some((l) => l.level === 30 && l.msg === 'certificate issued' && l.node === 'n1' && l.identity === ID_N1 && l.ttl === 3600),
      JSON.stringify(logLines),
    );
  } finally {
    c.close();
  }
});

test('dialing by IP without serverName verifies the IP SAN; long asks are capped', async () => {
  const c = new IstioCaClient({ address: `127.0.0.1:${port}`, rootsPem: creds.rootPem, tokenFile: tokenFile('n1-cap', TOKEN_N1) });
  try {
    const cert = await requestCertificate(c, ID_N1, 3 * 86400);
    const seconds = (cert.notAfter.getTime() - Date.now()) / 1000;
    assert.ok(seconds > MAX_TTL - 60 && seconds <= MAX_TTL, `lifetime ${seconds} s`);
  } finally {
    c.close();
  }
});

test('the token file is re-read for every call', async () => {
  const f = tokenFile('n1-rotating', TOKEN_N1_OLD);
  const c = client({ tokenFile: f });
  try {
    await assert.rejects(
      requestCertificate(c, ID_N1, 600),
      (e: Error & { code?: string }) => e.code === 'AMBIT_E_CA' && /UNAUTHENTICATED/.test(e.message),
    );
    fs.writeFileSync(f, TOKEN_N1);
    await requestCertificate(c, ID_N1, 600);
    fs.writeFileSync(f, TOKEN_N1_OLD);
    await assert.rejects(requestCertificate(c, ID_N1, 600), /UNAUTHENTICATED/);
  } finally {
    c.close();
  }
});

test('an unknown token is refused as UNAUTHENTICATED without echoing it; a missing or empty token file is AMBIT_E_AUTH', async () => {
  const c = client({ tokenFile: tokenFile('unknown', 'not-a-node-token') });
  try {
    logLines.length = 0;
    await assert.rejects(requestCertificate(c, ID_N1, 600), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'AMBIT_E_CA');
      assert.match(e.message, /CA at 127\.0\.0\.1:\d+ refused .*: UNAUTHENTICATED: unknown bearer token/);
      assert.match(e.message, /hint: the token in .*unknown is not accepted/);
      assert.doesNotMatch(e.message, /not-a-node-token/);
      return true;
    });
    assert.ok(logLines.some((l) => l.level === 40 && l.status === 'UNAUTHENTICATED' && /unknown bearer token/.test(String(l.reason))));
    assert.ok(!JSON.stringify(logLines).includes('not-a-node-token'));
  } finally {
    c.close();
  }
  const missing = path.join(dir, 'no-such-token');
  const c2 = client({ tokenFile: missing });
  const c3 = client({ tokenFile: tokenFile('empty', '') });
  try {
    await assert.rejects(
      c2.sign(await csrFor(ID_N1), ID_N1, 600),
      (e: Error & { code?: string }) => e.code === 'AMBIT_E_AUTH' && e.message.includes(missing) && /ENOENT/.test(e.message),
    );
    await assert.rejects(
      c3.sign(await csrFor(ID_N1), ID_N1, 600),
      (e: Error & { code?: string }) => e.code === 'AMBIT_E_AUTH' && /empty/.test(e.message),
    );
  } finally {
    c2.close();
    c3.close();
  }
});

test('the token check names what is wrong with the header', () => {
  const tokens = new NodeTokens([{ node: 'n1', sha256: NodeTokens.hash(TOKEN_N1) }]);
  const md = (v?: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (v !== undefined) m.set('authorization', v);
    return m;
  };
  assert.deepEqual(tokens.authenticate(md(`Bearer ${TOKEN_N1}`)), { node: 'n1' });
  assert.deepEqual(tokens.authenticate(md(`bearer ${TOKEN_N1}`)), { node: 'n1' });
  assert.match((tokens.authenticate(md()) as { error: string }).error, /no authorization header/);
  const bare = tokens.authenticate(md(TOKEN_N1)) as { error: string };
  assert.match(bare.error, /not "Bearer <token>"/);
  assert.ok(!bare.error.includes(TOKEN_N1));
  assert.match((tokens.authenticate(md('Bearer nope')) as { error: string }).error, /unknown bearer token/);
  assert.throws(() => new NodeTokens([{ node: 'n1', sha256: TOKEN_N1 }]), /controlPlane\.tokens\[0\]\.sha256 \(node n1\)/);
  assert.throws(
    () =>
      new NodeTokens([
        { node: 'a', sha256: NodeTokens.hash('x') },
        { node: 'b', sha256: NodeTokens.hash('x') },
      ]),
    /nodes a and b have the same token/,
  );
});

test('n1 asking for an identity only on n2 is refused PERMISSION_DENIED, naming both', async () => {
  const c = client({ tokenFile: tokenFile('n1-greedy', TOKEN_N1) });
  try {
    await assert.rejects(requestCertificate(c, ID_N2, 600), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'AMBIT_E_CA');
      assert.ok(e.message.includes(`PERMISSION_DENIED: node n1 asked for ${ID_N2}, which no workload on n1 runs as`), e.message);
      return true;
    });
  } finally {
    c.close();
  }
});

test('requests without ImpersonatedIdentity or with a bad CSR are INVALID_ARGUMENT', async () => {
  const own = client({ tokenFile: tokenFile('n1-own', TOKEN_N1), impersonate: false });
  const c = client({ tokenFile: tokenFile('n1-bad-csr', TOKEN_N1) });
  try {
    await assert.rejects(
      requestCertificate(own, ID_N1, 600),
      /INVALID_ARGUMENT: metadata\.ImpersonatedIdentity is missing: .*node n1's own identity, which ambit's control plane does not issue/,
    );
    await assert.rejects(
      c.sign('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', ID_N1, 600),
      /INVALID_ARGUMENT: csr for spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep is not a PEM PKCS#10 request/,
    );
  } finally {
    own.close();
    c.close();
  }
});

test('a CA that answers with a certificate for another identity is refused, naming both', async () => {
  const stub = await serve({
    CreateCertificate: ((
      call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
      cb: grpc.sendUnaryData<IstioCertificateResponse>,
    ) => {
      ca.sign(call.request.csr, ID_N2, 600).then(
        (chain) => cb(null, { cert_chain: chain }),
        (err: Error) => cb(err),
      );
    }) as grpc.handleUnaryCall<unknown, unknown>,
  });
  const c = client({ tokenFile: tokenFile('n1-stub', TOKEN_N1) }, stub.port);
  try {
    await assert.rejects(requestCertificate(c, ID_N1, 600), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'AMBIT_E_CA');
      assert.ok(e.message.includes(ID_N1) && e.message.includes(ID_N2), e.message);
      return true;
    });
  } finally {
    c.close();
    stub.server.forceShutdown();
  }
});

test('a client that does not trust the server certificate fails as unreachable', async () => {
  const other = await BuiltinCa.open(path.join(dir, 'other-ca'));
  const c = client({ tokenFile: tokenFile('n1-wrong-roots', TOKEN_N1), rootsPem: other.rootPem, timeoutMs: 5000 });
  try {
    await assert.rejects(requestCertificate(c, ID_N1, 600), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'AMBIT_E_CA');
      assert.match(e.message, /CA at 127\.0\.0\.1:\d+ unreachable for .*: UNAVAILABLE: /);
      assert.match(e.message, /hint: is the control plane running and reachable/);
      return true;
    });
  } finally {
    c.close();
  }
});

test('every malformed CSR is INVALID_ARGUMENT naming what is wrong and what is expected, never INTERNAL', async () => {
  const c = client({ tokenFile: tokenFile('n1-csr-zoo', TOKEN_N1) });
  const P384 = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
  const RSA = { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
  const cases: [string, string, RegExp][] = [
    ['RSA key', await csrWith({ alg: RSA, sans: [ID_N1] }), /has an RSA 2048-bit key; expected an ECDSA P-256 key/],
    ['P-384 key', await csrWith({ alg: P384, sans: [ID_N1] }), /has an EC secp384r1 key; expected an ECDSA P-256 key/],
    ['garbage', 'hello, CA', /is not PEM with a "-----BEGIN CERTIFICATE REQUEST-----" block/],
    ['a certificate, not a request', ca.rootPem, /is not PEM with a "-----BEGIN CERTIFICATE REQUEST-----" block/],
    ['empty', '', /is empty; expected a PEM "CERTIFICATE REQUEST"/],
    ['too large', `${await csrWith({ sans: [ID_N1] })}${'#'.repeat(20_000)}`, /is \d+ bytes; at most 16384 are accepted/],
    ['bad signature', flipSignature(await csrWith({ sans: [ID_N1] })), /signature that does not match its public key/],
    [
      'no SAN',
      await csrWith({ sans: [] }),
      /has no subjectAltName extension; expected exactly one URI SAN, spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep/,
    ],
    [
      'two SANs',
      await csrWith({ sans: [ID_N1, ID_N2] }),
      /names 2 SANs \(url:spiffe:\/\/.*sleep, url:spiffe:\/\/.*httpbin\); expected exactly one URI SAN/,
    ],
    ['DNS SAN', await csrWith({ sans: [], dns: ['sleep.default.svc'] }), /names dns:sleep\.default\.svc; expected exactly one URI SAN/],
    [
      'not SPIFFE',
      await csrWith({ sans: ['https://example.com/sleep'] }),
      /names "https:\/\/example\.com\/sleep", not spiffe:\/\/<trust domain>/,
    ],
    [
      'wrong identity',
      await csrWith({ sans: [ID_N2] }),
      /names spiffe:\/\/cluster\.local\/ns\/default\/sa\/httpbin, not the identity asked for; expected exactly one URI SAN, spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep/,
    ],
  ];
  try {
    for (const [what, csr, reason] of cases) {
      await assert.rejects(
        c.sign(csr, ID_N1, 600),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'AMBIT_E_CA', what);
          assert.match(
            e.message,
            /refused spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep: INVALID_ARGUMENT: csr for spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep /,
            `${what}: ${e.message}`,
          );
          assert.match(e.message, reason, `${what}: ${e.message}`);
          return true;
        },
        what,
      );
    }
  } finally {
    c.close();
  }
});

test('validity_duration: negative or beyond a year is INVALID_ARGUMENT (a unit mistake); up to a year is clamped to the maximum', async () => {
  const c = client({ tokenFile: tokenFile('n1-ttl', TOKEN_N1) });
  try {
    for (const ttl of [-1, 86_400_000, 366 * 86400]) {
      await assert.rejects(
        c.sign(await csrFor(ID_N1), ID_N1, ttl),
        (e: Error) => {
          assert.match(
            e.message,
            new RegExp(
              `INVALID_ARGUMENT: validity_duration ${ttl} must be whole seconds from 0 \\(the default, 86400\\) to 31536000; asks above ${MAX_TTL} are shortened to it`,
            ),
            e.message,
          );
          return true;
        },
        String(ttl),
      );
    }
    const chain = await c.sign(await csrFor(ID_N1), ID_N1, 365 * 86400);
    const seconds = (new Date(new X509Certificate(at(chain, 0, 'the chain')).validTo).getTime() - Date.now()) / 1000;
    assert.ok(seconds > MAX_TTL - 60 && seconds <= MAX_TTL, `lifetime ${seconds} s`);
  } finally {
    c.close();
  }
});

test('the built-in CA itself refuses a non-P-256 key with its reason, not an export failure', async () => {
  const rsa = await csrWith({
    alg: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sans: [ID_N1],
  });
  await assert.rejects(
    ca.sign(rsa, ID_N1, 600),
    (e: Error & { code?: string }) => e.code === 'AMBIT_E_CA' && /has an RSA 2048-bit key; expected an ECDSA P-256 key/.test(e.message),
  );
});
