// A deliberately naive HTTP/2 wire writer and reader for the HBONE fuzzer.
// Node's own http2 client refuses to send most of what a hostile peer
// would (bad lengths, stray CONTINUATION, zero window increments, invalid
// SETTINGS), so frames are built byte by byte here (RFC 9113 §4.1) with the
// simplest HPACK (RFC 7541): literal fields without indexing, no Huffman,
// which leave the server's dynamic table alone and so keep one connection
// usable across many fuzz sequences. The reader only splits frames: the
// fuzzer needs to see PING ACKs, GOAWAY and which streams got answers, not
// to decode the server's header blocks.

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const SETTING = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
} as const;

const FRAME_HEADER = 9;

/**
 * One frame. `declaredLength` lets a test lie about the payload length;
 * the stream id keeps its reserved top bit only when the caller sets it.
 */
export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Buffer = Buffer.alloc(0),
  declaredLength = payload.length,
): Buffer {
  const b = Buffer.alloc(FRAME_HEADER + payload.length);
  b.writeUIntBE(declaredLength & 0xffffff, 0, 3);
  b[3] = type & 0xff;
  b[4] = flags & 0xff;
  b.writeUInt32BE(streamId >>> 0, 5);
  payload.copy(b, FRAME_HEADER);
  return b;
}

/** An HPACK integer with an N-bit prefix; `high` holds the bits above the prefix in the first byte. */
export function hpackInt(value: number, prefixBits: number, high = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([high | value]);
  const out = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

const hpackString = (s: Buffer): Buffer => Buffer.concat([hpackInt(s.length, 7, 0x00), s]);

/** "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2), raw octets. */
export function literal(name: string | Buffer, value: string | Buffer): Buffer {
  const bytes = (v: string | Buffer): Buffer => (typeof v === 'string' ? Buffer.from(v, 'latin1') : v);
  return Buffer.concat([Buffer.from([0x00]), hpackString(bytes(name)), hpackString(bytes(value))]);
}

export type HeaderField = [string, string];

export const headerBlock = (fields: readonly HeaderField[]): Buffer => Buffer.concat(fields.map(([n, v]) => literal(n, v)));

/** A padded payload: pad length octet, data, zero padding (RFC 9113 §6.1). */
export function padded(data: Buffer, pad: number): Buffer {
  return Buffer.concat([Buffer.from([pad & 0xff]), data, Buffer.alloc(pad & 0xff)]);
}

export function settingsPayload(entries: readonly [number, number][]): Buffer {
  const b = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    b.writeUInt16BE(id & 0xffff, i * 6);
    b.writeUInt32BE(value >>> 0, i * 6 + 2);
  });
  return b;
}

export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** Splits the server's byte stream into frames; keeps what is incomplete for the next push. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Frame[] = [];
    while (this.pending.length >= FRAME_HEADER) {
      const length = this.pending.readUIntBE(0, 3);
      if (this.pending.length < FRAME_HEADER + length) break;
      out.push({
        type: this.pending.readUInt8(3),
        flags: this.pending.readUInt8(4),
        streamId: this.pending.readUInt32BE(5) & 0x7fffffff,
        payload: this.pending.subarray(FRAME_HEADER, FRAME_HEADER + length),
      });
      this.pending = this.pending.subarray(FRAME_HEADER + length);
    }
    return out;
  }
}
