// Access token (a static token, an API key `tw_…` or a JWT). A gateway started
// with authentication refuses the API without one; the dashboard's own files
// stay open. The token never goes in a URL the dashboard requests (URLs end up
// in server and proxy logs and in histories, and a production server refuses
// them): REST calls, SSE (read with fetch) and long-polls send
// `Authorization: Bearer T`, WebSockets a `bearer.T` subprotocol.
//
// The page takes it from its address: `/#token=T` (a fragment is never sent
// to the server) or, for old links, `/?token=T`. It then removes it from the
// address bar (history.replaceState: not in the history, bookmarks or a
// Referer) and keeps it in sessionStorage, so that a reload of the tab still
// has it and closing the tab forgets it. `#token=` with nothing forgets it at once.

/** sessionStorage key of the token. */
export const TOKEN_KEY = 'tickwire.token';

/** What a page address says about the token, and the address without it. */
export interface AddressToken {
  /** The token; '' when the address names an empty one (forget it); null when it names none. */
  token: string | null;
  /** The address with every `token` parameter removed from its query and fragment. */
  href: string;
}

/**
 * Reads and removes `token` from an address's fragment (`#token=T`, beside
 * other `&`-separated parameters; `+` is a plus there) and query
 * (`?token=T`, form-encoded as before). The fragment wins when both have one.
 * Other parameters are kept byte for byte.
 */
export function tokenFromAddress(href: string): AddressToken {
  const url = new URL(href);
  const fromHash = strip(url.hash.replace(/^#/, ''), (v) => {
    try {
      return decodeURIComponent(v);
    } catch {
      return v;
    }
  });
  const fromQuery = strip(url.search.replace(/^\?/, ''), (v) => new URLSearchParams(`t=${v}`).get('t') ?? '');
  // Emptied, they go with their `?` and `#`.
  url.hash = fromHash.rest;
  url.search = fromQuery.rest;
  return { token: fromHash.value ?? fromQuery.value, href: url.href };
}

/** `&`-separated parameters without `token`, and the last `token` value decoded. */
function strip(params: string, decode: (v: string) => string): { value: string | null; rest: string } {
  let value: string | null = null;
  const rest: string[] = [];
  for (const part of params.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    if (key === 'token') value = decode(eq < 0 ? '' : part.slice(eq + 1));
    else rest.push(part);
  }
  return { value, rest: rest.join('&') };
}

/** The parts of `window` the token is taken with (tests give fakes). */
export interface TokenHost {
  location: { href: string };
  history: { state: unknown; replaceState(data: unknown, unused: string, url?: string): void };
  sessionStorage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
}

/**
 * The page's token: from its address (then removed from the address bar and
 * kept in sessionStorage), else the one kept from earlier in this tab, else null.
 */
export function takeToken(host: TokenHost): string | null {
  const { token, href } = tokenFromAddress(host.location.href);
  const storage = safeStorage(host);
  if (token !== null) {
    if (href !== host.location.href) host.history.replaceState(host.history.state, '', href);
    try {
      if (token) storage?.setItem(TOKEN_KEY, token);
      else storage?.removeItem(TOKEN_KEY);
    } catch {
      /* storage full or refused: the token lasts for this page only */
    }
    return token || null;
  }
  try {
    return storage?.getItem(TOKEN_KEY) || null;
  } catch {
    return null;
  }
}

/** Keeps `token` for this tab (a key typed into the page), or forgets it (null). */
export function keepToken(host: Pick<TokenHost, 'sessionStorage'>, token: string | null): void {
  const storage = safeStorage(host);
  try {
    if (token) storage?.setItem(TOKEN_KEY, token);
    else storage?.removeItem(TOKEN_KEY);
  } catch {
    /* refused: nothing to keep it in */
  }
}

/** sessionStorage, or null where reading it throws (storage disabled). */
function safeStorage(host: Pick<TokenHost, 'sessionStorage'>): TokenHost['sessionStorage'] {
  try {
    return host.sessionStorage ?? null;
  } catch {
    return null;
  }
}

/** Headers that carry the token (none without one). */
export function authHeaders(token: string | null | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}
