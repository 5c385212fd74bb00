// src/datapath/maps.ts encodes the structs of bpf/lib/types.h by hand; the
// compiled object's BTF is the truth. A field moved in C fails here, and so
// does a constant changed on one side only.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { AMBIT_SOCKET_MARK } from '../../src/datapath/ffi';
import { MAX_PODS } from '../../src/datapath/maps';
import { PORT_INBOUND_HBONE, PORT_INBOUND_PLAIN, PORT_OUTBOUND } from '../../src/datapath/ports';

const OBJ = path.resolve(__dirname, '../../../build/bpf/redirect.o');

interface BtfType {
  kind: string;
  name: string;
  size?: number;
  members?: { name: string; bits_offset: number }[];
}

function structs(): Map<string, BtfType> {
  const out = execFileSync('bpftool', ['btf', 'dump', 'file', OBJ, '--json'], { encoding: 'utf8' });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));
}

const layout = (t: BtfType | undefined): Record<string, number> =>
  Object.fromEntries((t?.members ?? []).map((m) => [m.name, m.bits_offset / 8]));

test('constants of bpf/lib/types.h match their TypeScript mirrors', () => {
  const header = fs.readFileSync(path.resolve(__dirname, '../../../bpf/lib/types.h'), 'utf8');
  const define = (name: string): number => Number(new RegExp(`#define ${name} (\\S+)`).exec(header)?.[1]);
  assert.equal(define('AMBIT_SOCKET_MARK'), AMBIT_SOCKET_MARK);
  assert.equal(define('AMBIT_PORT_OUTBOUND'), PORT_OUTBOUND);
  assert.equal(define('AMBIT_PORT_INBOUND_PLAIN'), PORT_INBOUND_PLAIN);
  assert.equal(define('AMBIT_PORT_INBOUND_HBONE'), PORT_INBOUND_HBONE);
  assert.equal(define('AMBIT_MAX_PODS'), MAX_PODS);
});

test('struct layouts match what maps.ts encodes', () => {
  const s = structs();
  assert.equal(s.get('flow_key')?.size, 12);
  assert.deepEqual(layout(s.get('flow_key')), { pod_id: 0, src_ip4: 4, src_port: 8, _pad: 10 });
  assert.equal(s.get('orig_dst')?.size, 16);
  assert.deepEqual(layout(s.get('orig_dst')), { ip4: 0, port: 4, _pad: 6, pod_id: 8, _pad2: 12 });
  assert.equal(s.get('pod_entry')?.size, 8);
  assert.deepEqual(layout(s.get('pod_entry')), { pod_id: 0, flags: 4 });
});
