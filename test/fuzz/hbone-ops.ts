// What a hostile HBONE peer can send once its mutual-TLS handshake is done,
// as abstract operations (fast-check arbitraries) turned into bytes against
// a connection's state. Streams are referred to relatively ("a new one",
// "the one opened k streams ago") so the same sequence stays meaningful on
// whichever connection carries it: that is what lets one TLS connection
// carry many fuzz sequences. Operations that make the rest of the byte
// stream unreadable (a truncated frame) are terminal: the sequence ends
// there and its connection is closed.
import fc from 'fast-check';
import { FLAG, FRAME, frame, type HeaderField, headerBlock, hpackInt, padded, SETTING, settingsPayload, u32 } from './h2-wire';

export type StreamRef = { k: 'new' } | { k: 'last'; back: number } | { k: 'zero' } | { k: 'raw'; id: number };

export type Op =
  | {
      t: 'headers';
      s: StreamRef;
      fields: HeaderField[];
      raw?: number[];
      endStream: boolean;
      endHeaders: boolean;
      pad?: number;
      priority: boolean;
      split: number;
    }
  | { t: 'data'; s: StreamRef; len: number; endStream: boolean; pad?: number }
  | { t: 'rst'; s: StreamRef; code: number }
  | { t: 'window'; s: StreamRef; inc: number }
  | { t: 'settings'; entries: [number, number][]; ack: boolean }
  | { t: 'ping'; ack: boolean; len: number }
  | { t: 'goaway'; last: number; code: number; debug: number }
  | { t: 'priority'; s: StreamRef; dep: number | 'self'; weight: number; exclusive: boolean }
  | { t: 'continuation'; s: StreamRef; fields: HeaderField[]; endHeaders: boolean }
  | { t: 'push'; s: StreamRef }
  | { t: 'unknown'; type: number; flags: number; s: StreamRef; len: number }
  | { t: 'badlen'; type: number; s: StreamRef; len: number }
  | { t: 'oversize'; s: StreamRef }
  | { t: 'truncated'; type: number; s: StreamRef; claimed: number; sent: number }
  | { t: 'await'; s: StreamRef }
  | { t: 'sync' };

/** The destination the sequences aim at: its pod address, an app port that answers and one that does not. */
export interface Target {
  ip: string;
  openPort: number;
  closedPort: number;
  otherIp: string;
}

/** Per connection: the next client stream id and the streams this connection opened. */
export class StreamIds {
  next = 1;
  readonly opened: number[] = [];

  resolve(s: StreamRef): number {
    switch (s.k) {
      case 'new': {
        const id = this.next;
        this.next += 2;
        this.opened.push(id);
        return id;
      }
      case 'last':
        return this.opened[Math.max(0, this.opened.length - 1 - s.back)] ?? this.next;
      case 'zero':
        return 0;
      case 'raw':
        return s.id;
    }
  }
}

/** arb one time in n, otherwise undefined. */
const rarely = <T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: n - 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });

const ERROR_CODES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xff, 0x7fffffff, 0xffffffff];

export function authorityArb(t: Target): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.constant(`${t.ip}:${t.openPort}`) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        `${t.ip}:${t.closedPort}`,
        `${t.ip}:15008`,
        `${t.ip}:15001`,
        `${t.ip}:15006`,
        `${t.otherIp}:${t.openPort}`,
      ),
    },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.constantFrom(
          '',
          t.ip,
          `${t.ip}:`,
          `:${t.openPort}`,
          `${t.ip}:0`,
          `${t.ip}:65536`,
          `${t.ip}:99999999999`,
          '999.1.1.1:80',
          '[::1]:80',
          `${t.ip}:${t.openPort}:1`,
          ` ${t.ip}:${t.openPort}`,
          `${t.ip}:${t.openPort}\0`,
          'localhost:80',
          `${t.ip}:-1`,
        ),
        fc.string({ maxLength: 40 }),
        fc.nat(300).map((n) => `${t.ip}:${'9'.repeat(n)}`),
      ),
    },
  );
}

const tokenish = fc.stringMatching(/^[a-z0-9-]{1,12}$/);

export function fieldsArb(t: Target): fc.Arbitrary<HeaderField[]> {
  const connect = fc.tuple(authorityArb(t), fc.boolean()).map(([a, withMethod]): HeaderField[] =>
    withMethod
      ? [
          [':method', 'CONNECT'],
          [':authority', a],
        ]
      : [[':authority', a]],
  );
  const pseudo = fc.oneof(
    connect,
    fc.constant<HeaderField[]>([
      [':method', 'GET'],
      [':scheme', 'https'],
      [':path', '/'],
      [':authority', `${t.ip}:${t.openPort}`],
    ]),
    fc.constant<HeaderField[]>([
      [':method', 'CONNECT'],
      [':authority', `${t.ip}:${t.openPort}`],
      [':path', '/'],
      [':scheme', 'https'],
    ]),
    fc.constant<HeaderField[]>([
      [':method', 'CONNECT'],
      [':method', 'CONNECT'],
      [':authority', `${t.ip}:${t.openPort}`],
    ]),
    fc.constant<HeaderField[]>([
      [':method', 'CONNECT'],
      [':protocol', 'websocket'],
      [':authority', `${t.ip}:${t.openPort}`],
    ]),
    fc.constant<HeaderField[]>([[':status', '200']]),
    fc.constant<HeaderField[]>([]),
  );
  const extra = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.constantFrom<HeaderField>(
        ['baggage', 'k8s.namespace.name=default,k8s.pod.name=evil'],
        ['traceparent', '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01'],
        ['forwarded', 'for="10.0.0.1:1234";host=x.default.svc'],
      ),
    },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('baggage', 'traceparent', 'forwarded'), fc.string({ maxLength: 200 })) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<HeaderField>(
        ['connection', 'keep-alive'],
        ['te', 'gzip'],
        ['transfer-encoding', 'chunked'],
        ['Upper-Case', 'x'],
        ['', 'empty name'],
        ['bad name', 'x'],
        ['x', 'a\r\nb: c'],
        [':late', 'pseudo after regular'],
      ),
    },
    { weight: 1, arbitrary: fc.tuple(tokenish, fc.nat(20_000)).map(([n, len]): HeaderField => [n, 'v'.repeat(len)]) },
    { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 40 })) },
  );
  return fc.tuple(pseudo, fc.array(extra, { maxLength: 5 })).map(([p, e]) => [...p, ...e]);
}

const streamArb: fc.Arbitrary<StreamRef> = fc.oneof(
  { weight: 6, arbitrary: fc.nat(2).map((back): StreamRef => ({ k: 'last', back })) },
  { weight: 1, arbitrary: fc.constant<StreamRef>({ k: 'new' }) },
  { weight: 1, arbitrary: fc.constant<StreamRef>({ k: 'zero' }) },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.constantFrom(2, 4, 0x7fffffff, 0x80000001, 0xffffffff), fc.nat(1000)).map((id): StreamRef => ({ k: 'raw', id })),
  },
);

const settingsArb = fc.array(
  fc.oneof(
    fc.tuple(fc.constantFrom(SETTING.ENABLE_PUSH), fc.constantFrom(0, 1, 2, 0xffffffff)),
    fc.tuple(fc.constantFrom(SETTING.INITIAL_WINDOW_SIZE), fc.constantFrom(0, 1, 65535, 0x7fffffff, 0x80000000, 0xffffffff)),
    fc.tuple(fc.constantFrom(SETTING.MAX_FRAME_SIZE), fc.constantFrom(0, 16383, 16384, 16777215, 16777216, 0xffffffff)),
    fc.tuple(
      fc.constantFrom(SETTING.HEADER_TABLE_SIZE, SETTING.MAX_CONCURRENT_STREAMS, SETTING.MAX_HEADER_LIST_SIZE),
      fc.constantFrom(0, 1, 100, 0xffffffff),
    ),
    fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.nat()),
  ),
  { maxLength: 6 },
);

export function opArb(t: Target): fc.Arbitrary<Op> {
  const fields = fieldsArb(t);
  return fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record(
        {
          t: fc.constant('headers' as const),
          s: fc.oneof({ weight: 5, arbitrary: fc.constant<StreamRef>({ k: 'new' }) }, { weight: 1, arbitrary: streamArb }),
          fields,
          endStream: fc.boolean(),
          endHeaders: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
          pad: rarely(fc.nat(255), 5),
          priority: fc.boolean(),
          split: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
          raw: fc.option(fc.array(fc.nat(255), { maxLength: 12 }), { freq: 12, nil: undefined }),
        },
        { requiredKeys: ['t', 's', 'fields', 'endStream', 'endHeaders', 'priority', 'split'] },
      ),
    },
    {
      weight: 6,
      arbitrary: fc.record(
        {
          t: fc.constant('data' as const),
          s: streamArb,
          len: fc.oneof(fc.nat(64), fc.nat(70_000)),
          endStream: fc.boolean(),
          pad: rarely(fc.nat(255), 6),
        },
        { requiredKeys: ['t', 's', 'len', 'endStream'] },
      ),
    },
    { weight: 6, arbitrary: fc.record({ t: fc.constant('rst' as const), s: streamArb, code: fc.constantFrom(...ERROR_CODES) }) },
    {
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant('window' as const),
        s: streamArb,
        inc: fc.constantFrom(0, 1, 65535, 0x7fffffff, 0x80000000, 0xffffffff),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        t: fc.constant('settings' as const),
        entries: settingsArb,
        ack: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('ping' as const), ack: fc.boolean(), len: fc.constantFrom(8, 8, 8, 0, 7, 9, 64) }) },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('goaway' as const),
        last: fc.constantFrom(0, 1, 0x7fffffff),
        code: fc.constantFrom(...ERROR_CODES),
        debug: fc.nat(64),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant('priority' as const),
        s: streamArb,
        dep: fc.oneof(fc.constant('self' as const), fc.nat(10)),
        weight: fc.nat(255),
        exclusive: fc.boolean(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('continuation' as const), s: streamArb, fields, endHeaders: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('push' as const), s: streamArb }) },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant('unknown' as const),
        type: fc.integer({ min: 10, max: 255 }),
        flags: fc.nat(255),
        s: streamArb,
        len: fc.nat(100),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('badlen' as const),
        type: fc.constantFrom(
          FRAME.PRIORITY,
          FRAME.RST_STREAM,
          FRAME.SETTINGS,
          FRAME.PING,
          FRAME.GOAWAY,
          FRAME.WINDOW_UPDATE,
          FRAME.HEADERS,
          FRAME.DATA,
        ),
        s: streamArb,
        len: fc.nat(12),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('oversize' as const), s: streamArb }) },
    { weight: 3, arbitrary: fc.record({ t: fc.constant('await' as const), s: fc.nat(1).map((back): StreamRef => ({ k: 'last', back })) }) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: 'sync' }) },
  );
}

const liveStream: fc.Arbitrary<StreamRef> = fc.nat(2).map((back): StreamRef => ({ k: 'last', back }));

/**
 * What an honest-looking peer does: CONNECTs, data, resets with any code,
 * window updates, waiting for answers, all on streams it opened. Most
 * sequences are made of these, so that one connection carries many of
 * them; the hostile operations (opArb) usually end the connection.
 */
export function benignOpArb(t: Target): fc.Arbitrary<Op> {
  const connect = fc
    .tuple(
      authorityArb(t),
      fc.array(
        fc.constantFrom<HeaderField>(
          ['baggage', 'k8s.namespace.name=default,k8s.pod.name=x'],
          ['traceparent', '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01'],
          ['forwarded', 'for="10.0.0.1:1"'],
        ),
        { maxLength: 3 },
      ),
    )
    .map(([a, extra]): HeaderField[] => [[':method', 'CONNECT'], [':authority', a], ...extra]);
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        t: fc.constant('headers' as const),
        s: fc.constant<StreamRef>({ k: 'new' }),
        fields: connect,
        endStream: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
        endHeaders: fc.constant(true),
        priority: fc.boolean(),
        split: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }),
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        t: fc.constant('data' as const),
        s: liveStream,
        len: fc.oneof(fc.nat(64), fc.nat(16_000)),
        endStream: fc.boolean(),
      }),
    },
    { weight: 5, arbitrary: fc.record({ t: fc.constant('rst' as const), s: liveStream, code: fc.constantFrom(...ERROR_CODES) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant('window' as const),
        s: fc.oneof(liveStream, fc.constant<StreamRef>({ k: 'zero' })),
        inc: fc.integer({ min: 1, max: 1 << 20 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('priority' as const),
        s: liveStream,
        dep: fc.constant(0),
        weight: fc.nat(255),
        exclusive: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('settings' as const),
        entries: fc.array(
          fc.tuple(
            fc.constantFrom(SETTING.HEADER_TABLE_SIZE, SETTING.MAX_CONCURRENT_STREAMS, SETTING.INITIAL_WINDOW_SIZE),
            fc.integer({ min: 1, max: 1 << 20 }),
          ),
          { maxLength: 2 },
        ),
        ack: fc.constant(false),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('unknown' as const),
        type: fc.integer({ min: 10, max: 255 }),
        flags: fc.nat(255),
        s: fc.oneof(liveStream, fc.constant<StreamRef>({ k: 'zero' })),
        len: fc.nat(100),
      }),
    },
    { weight: 3, arbitrary: fc.record({ t: fc.constant('await' as const), s: fc.nat(1).map((back): StreamRef => ({ k: 'last', back })) }) },
  );
}

const truncatedArb: fc.Arbitrary<Op> = fc
  .record({
    t: fc.constant('truncated' as const),
    type: fc.nat(12),
    s: streamArb,
    claimed: fc.integer({ min: 1, max: 20_000 }),
    sent: fc.nat(30),
  })
  .map((o) => ({ ...o, sent: Math.min(o.sent, o.claimed - 1) }));

/** A sequence: a few operations, now and then ending in a truncated frame. */
export function sequenceArb(t: Target): fc.Arbitrary<Op[]> {
  const op = fc.oneof({ weight: 12, arbitrary: benignOpArb(t) }, { weight: 1, arbitrary: opArb(t) });
  return fc
    .tuple(fc.array(op, { minLength: 1, maxLength: 8 }), rarely(truncatedArb, 40))
    .map(([ops, last]) => (last ? [...ops, last] : ops));
}

/** Bytes of one operation on a connection, or a wait the driver performs. */
export type Step = { bytes: Buffer; terminal?: boolean } | { wait: 'headers'; streamId: number } | { wait: 'sync' };

export function encode(op: Op, ids: StreamIds): Step {
  switch (op.t) {
    case 'headers': {
      const id = ids.resolve(op.s);
      let block = headerBlock(op.fields);
      if (op.raw) block = Buffer.concat([block, Buffer.from(op.raw)]);
      const prio = op.priority ? Buffer.concat([u32(0), Buffer.from([15])]) : Buffer.alloc(0);
      const parts: Buffer[] = [];
      const pieces = op.split > 0 ? chunks(block, op.split + 1) : [block];
      let flags = (op.endStream ? FLAG.END_STREAM : 0) | (op.priority ? FLAG.PRIORITY : 0);
      if (pieces.length === 1 && op.endHeaders) flags |= FLAG.END_HEADERS;
      const [head = Buffer.alloc(0), ...rest] = pieces;
      let first: Buffer = Buffer.concat([prio, head]);
      if (op.pad !== undefined) {
        first = padded(first, op.pad);
        flags |= FLAG.PADDED;
      }
      parts.push(frame(FRAME.HEADERS, flags, id, first));
      for (const [i, p] of rest.entries()) {
        parts.push(frame(FRAME.CONTINUATION, i === rest.length - 1 && op.endHeaders ? FLAG.END_HEADERS : 0, id, p));
      }
      return { bytes: Buffer.concat(parts) };
    }
    case 'data': {
      const body = Buffer.alloc(op.len, 0x61);
      return {
        bytes: frame(
          FRAME.DATA,
          (op.endStream ? FLAG.END_STREAM : 0) | (op.pad !== undefined ? FLAG.PADDED : 0),
          ids.resolve(op.s),
          op.pad !== undefined ? padded(body, op.pad) : body,
        ),
      };
    }
    case 'rst':
      return { bytes: frame(FRAME.RST_STREAM, 0, ids.resolve(op.s), u32(op.code)) };
    case 'window':
      return { bytes: frame(FRAME.WINDOW_UPDATE, 0, ids.resolve(op.s), u32(op.inc)) };
    case 'settings':
      return { bytes: frame(FRAME.SETTINGS, op.ack ? FLAG.ACK : 0, 0, settingsPayload(op.entries)) };
    case 'ping':
      return { bytes: frame(FRAME.PING, op.ack ? FLAG.ACK : 0, 0, Buffer.alloc(op.len, 0x42)) };
    case 'goaway':
      return { bytes: frame(FRAME.GOAWAY, 0, 0, Buffer.concat([u32(op.last), u32(op.code), Buffer.alloc(op.debug, 0x64)])) };
    case 'priority': {
      const id = ids.resolve(op.s);
      const dep = op.dep === 'self' ? id : op.dep;
      return { bytes: frame(FRAME.PRIORITY, 0, id, Buffer.concat([u32((op.exclusive ? 0x80000000 : 0) | dep), Buffer.from([op.weight])])) };
    }
    case 'continuation':
      return { bytes: frame(FRAME.CONTINUATION, op.endHeaders ? FLAG.END_HEADERS : 0, ids.resolve(op.s), headerBlock(op.fields)) };
    case 'push':
      return { bytes: frame(FRAME.PUSH_PROMISE, FLAG.END_HEADERS, ids.resolve(op.s), Buffer.concat([u32(2), hpackInt(2, 7, 0x80)])) };
    case 'unknown':
      return { bytes: frame(op.type, op.flags, ids.resolve(op.s), Buffer.alloc(op.len, 0x75)) };
    case 'badlen':
      return { bytes: frame(op.type, 0, ids.resolve(op.s), Buffer.alloc(op.len, 0x01)) };
    // Larger than the 1 MiB the server allows (SETTINGS_MAX_FRAME_SIZE): the header alone says so.
    case 'oversize':
      return { bytes: frame(FRAME.DATA, 0, ids.resolve(op.s), Buffer.alloc(0), 0xffffff), terminal: true };
    case 'truncated':
      return { bytes: frame(op.type, 0, ids.resolve(op.s), Buffer.alloc(op.sent, 0x74), op.claimed), terminal: true };
    case 'await':
      return { wait: 'headers', streamId: ids.resolve(op.s) };
    case 'sync':
      return { wait: 'sync' };
  }
}

function chunks(b: Buffer, n: number): Buffer[] {
  const size = Math.max(1, Math.ceil(b.length / n));
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out.length ? out : [b];
}

/** A short description of a sequence for reports (payloads elided). */
export function describe(ops: readonly Op[]): string {
  return JSON.stringify(ops, (k, v: unknown) =>
    k === 'fields' && Array.isArray(v)
      ? (v as HeaderField[]).map(([n, val]) => `${n}: ${val.length > 60 ? `${val.slice(0, 60)}…(${val.length})` : val}`)
      : v,
  );
}
