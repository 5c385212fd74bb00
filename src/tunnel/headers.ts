// The metadata HBONE carries on each CONNECT (docs/wire.md): a random W3C
// traceparent per connection — its trace id is the connection id both nodes
// log — the source workload as baggage, and the client address as forwarded.
import { randomBytes } from 'node:crypto';
import type { OutgoingHttpHeaders } from 'node:http2';
import type { Service, Workload } from '../state/types';

export function newTraceparent(): { traceparent: string; connId: string } {
  const r = randomBytes(24).toString('hex'); // one call: trace id (16 bytes) + span id (8)
  const traceId = r.slice(0, 32);
  return { traceparent: `00-${traceId}-${r.slice(32)}-01`, connId: traceId };
}

/** The trace id of a traceparent header, or undefined when it is malformed. */
export function connIdOf(traceparent: unknown): string | undefined {
  const m = typeof traceparent === 'string' ? /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent) : null;
  return m?.[1];
}

/** The source metadata a workload's connections carry (the same for all of them: build it once). */
export function baggageOf(src: Workload): string {
  return [
    `k8s.namespace.name=${src.namespace}`,
    `k8s.pod.name=${src.name}`,
    `service.name=${src.labels.app ?? src.name}`,
    `service.version=${src.labels.version ?? 'latest'}`,
  ].join(',');
}

export function connectHeaders(opts: {
  authority: string;
  traceparent: string;
  baggage: string;
  clientAddr: string;
  service?: Service;
}): OutgoingHttpHeaders {
  return {
    ':authority': opts.authority,
    baggage: opts.baggage,
    forwarded: `for="${opts.clientAddr}"${opts.service ? `;host=${opts.service.hostname}` : ''}`,
    traceparent: opts.traceparent,
  };
}

/** The source workload a peer described in its baggage (what the destination reports it as). */
export function sourceFromBaggage(baggage: unknown): { name: string; namespace: string; labels: Record<string, string> } | undefined {
  if (typeof baggage !== 'string') return undefined;
  const kv = new Map<string, string>();
  for (const member of baggage.split(',')) {
    const [k, v] = member.trim().split('=', 2);
    if (k && v) kv.set(k, v);
  }
  const name = kv.get('k8s.pod.name');
  const namespace = kv.get('k8s.namespace.name');
  if (!name || !namespace) return undefined;
  const labels: Record<string, string> = {};
  const app = kv.get('service.name');
  const version = kv.get('service.version');
  if (app) labels.app = app;
  if (version) labels.version = version;
  return { name, namespace, labels };
}

/** The service hostname of a `forwarded` header's `host=` parameter, if any. */
export function forwardedHost(forwarded: unknown): string | undefined {
  return typeof forwarded === 'string' ? /;\s*host=([^;,\s]+)/.exec(forwarded)?.[1] : undefined;
}

/** `ip:port` with a valid IPv4 address and port, or undefined. */
export function parseAuthority(authority: unknown): { ip: string; port: number } | undefined {
  if (typeof authority !== 'string') return undefined;
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(authority);
  const ip = m?.[1];
  const port = Number(m?.[2]);
  if (ip === undefined || !(port >= 1 && port <= 65535) || ip.split('.').some((o) => Number(o) > 255)) return undefined;
  return { ip, port };
}
