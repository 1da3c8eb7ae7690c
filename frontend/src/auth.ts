// Access token pass-through. A gateway started with --auth-token refuses the
// API without a token; the dashboard's own files stay open. Opened as
// `/?token=T`, the dashboard sends `Authorization: Bearer T` on every REST
// call and adds `token=T` to its WebSocket, SSE and long-poll URLs (browsers
// cannot set headers on those). Without a token nothing changes.

/** The `token` query parameter of a page address (`location.search`), or null. */
export function tokenFromSearch(search: string): string | null {
  const token = new URLSearchParams(search).get('token');
  return token ? token : null;
}

/** Headers that carry the token (none without one). */
export function authHeaders(token: string | null | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** `url` with `token=` added to its query string (unchanged without a token). */
export function withToken(url: string, token: string | null | undefined): string {
  if (!token) return url;
  const hash = url.indexOf('#');
  const head = hash < 0 ? url : url.slice(0, hash);
  const tail = hash < 0 ? '' : url.slice(hash);
  const sep = head.includes('?') ? (head.endsWith('?') || head.endsWith('&') ? '' : '&') : '?';
  return `${head}${sep}token=${encodeURIComponent(token)}${tail}`;
}
