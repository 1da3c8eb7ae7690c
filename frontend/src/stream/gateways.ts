// The gateways the dashboard may use. A cluster's gateways (`tickwire serve
// --role gateway`) all give the same sequence numbers and epoch, so a stream
// that loses one resumes on another with `since` and `epoch` exactly as after
// a reconnect to the same server. Opened as `/?gateways=ORIGIN,ORIGIN,…`, the
// dashboard streams from and calls one of them at a time and moves to the next
// when a connection cannot be made; without the parameter it uses its own
// origin only, as before.

/** `http(s)://host:port` of `text`, or null for anything that is not an http(s) address. */
export function toOrigin(text: string, pageProtocol = 'http:'): string | null {
  const t = text.trim();
  if (!t) return null;
  let u: URL;
  try {
    // "127.0.0.1:8081" has no scheme: take the page's.
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(t) ? t : `${pageProtocol}//${t}`);
  } catch {
    return null;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : null;
}

/**
 * The gateway origins named by a page address's `gateways` parameter
 * (comma-separated; a repeated parameter adds more), in their order, without
 * duplicates or unusable entries. Without one: the page's own origin alone.
 */
export function gatewaysFromSearch(search: string, pageOrigin: string): string[] {
  const protocol = pageOrigin.startsWith('https:') ? 'https:' : 'http:';
  const out: string[] = [];
  for (const value of new URLSearchParams(search).getAll('gateways')) {
    for (const part of value.split(',')) {
      const origin = toOrigin(part, protocol);
      if (origin && !out.includes(origin)) out.push(origin);
    }
  }
  return out.length ? out : [pageOrigin];
}

/** `host:port` of an origin, as the status bar shows it. */
export function hostPort(origin: string): string {
  try {
    const u = new URL(origin);
    // URL drops a scheme's default port; show it anyway.
    return u.port ? u.host : `${u.host}:${u.protocol === 'https:' ? 443 : 80}`;
  } catch {
    return origin;
  }
}

/**
 * The gateway in use and the order to try the others in: the stream client
 * moves on with advance() when a connection fails, and REST calls read
 * `current`, so both always go to the same gateway.
 */
export class GatewayList {
  readonly urls: readonly string[];
  private idx: number;

  /** `start`: the origin to begin with (e.g. the page's own: it just answered) when it is in the list; else the first. */
  constructor(urls: readonly string[], start?: string) {
    if (urls.length === 0) throw new Error('GatewayList needs at least one gateway');
    this.urls = [...urls];
    const at = start === undefined ? -1 : this.urls.indexOf(start);
    this.idx = at < 0 ? 0 : at;
  }

  get current(): string {
    return this.urls[this.idx];
  }

  get index(): number {
    return this.idx;
  }

  get size(): number {
    return this.urls.length;
  }

  /** Moves to the next gateway (after the last, the first again) and returns it. */
  advance(): string {
    this.idx = (this.idx + 1) % this.urls.length;
    return this.current;
  }
}
