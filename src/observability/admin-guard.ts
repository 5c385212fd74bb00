// Who may talk to the admin port. It listens on 127.0.0.1 only, but any web
// page open in a browser on the node can make that browser send requests
// there: a cross-origin form POST or a no-cors fetch arrives without a
// preflight, and a DNS-rebound name makes a page "same-origin" with it. So
// the loopback address alone proves nothing. A mutation must carry what a
// browser will not send cross-origin without a CORS preflight (which this
// server never grants): a custom header; and it must carry no Origin (a
// browser adds one to every POST; curl and scripts send none). Every
// request must name a loopback Host, which a rebound name is not.
import type http from 'node:http';
import net from 'node:net';

export const ADMIN_HEADER = 'x-ambit-admin';

/** What to send, for the 403 body and the docs. */
export const HOW_TO = `curl -X POST -H '${ADMIN_HEADER}: true' http://localhost:15000/…`;

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.', 'ip6-localhost', 'ip6-loopback']);

/** Host without its port, lower-case; IPv6 without brackets. */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') === -1 ? undefined : h.indexOf(']'));
  const colon = h.lastIndexOf(':');
  return colon === -1 || h.indexOf(':') !== colon ? h : h.slice(0, colon);
}

export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = hostName(host);
  if (LOOPBACK_NAMES.has(name)) return true;
  if (net.isIPv4(name)) return name.startsWith('127.');
  if (net.isIPv6(name)) return name === '::1' || /^::ffff:127\./.test(name);
  return false;
}

export interface Refusal {
  kind: 'host' | 'origin' | 'fetch-site' | 'header';
  message: string;
}

/** Why req may not be served by the admin port, or undefined when it may. */
export function refusal(req: http.IncomingMessage, mutation: boolean): Refusal | undefined {
  const host = req.headers.host;
  if (!isLoopbackHost(host)) {
    return {
      kind: 'host',
      message:
        `Host ${JSON.stringify(host ?? '')} is not a loopback name or address; ` +
        'the admin port answers only requests for localhost, 127.0.0.1 or [::1] (a browser page behind a rebound DNS name sends its own)',
    };
  }
  if (!mutation) return undefined;
  if (req.headers.origin !== undefined) {
    return {
      kind: 'origin',
      message: `a request with an Origin header (${JSON.stringify(req.headers.origin.slice(0, 200))}) is a browser's; send it from a shell: ${HOW_TO}`,
    };
  }
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'none' && site !== 'same-origin') {
    return {
      kind: 'fetch-site',
      message: `Sec-Fetch-Site ${JSON.stringify(site.slice(0, 40))} is a cross-site browser request; send it from a shell: ${HOW_TO}`,
    };
  }
  if (req.headers[ADMIN_HEADER] !== 'true') {
    return { kind: 'header', message: `header ${ADMIN_HEADER}: true is required (a browser cannot send it cross-origin); ${HOW_TO}` };
  }
  return undefined;
}
