import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { api, setApiToken } from '../src/api';
import { TOKEN_KEY, type TokenHost, authHeaders, keepToken, takeToken, tokenFromAddress } from '../src/auth';
import { StreamClient } from '../src/stream/client';
import { FakePoll, FakeSse, FakeWebSocket } from './fakes';

describe('the token in the page address', () => {
  it('is read from the fragment and the query, and removed from both; other parameters stay as they were', () => {
    expect(tokenFromAddress('https://h:8443/#token=tw_a1_s3cret')).toEqual({ token: 'tw_a1_s3cret', href: 'https://h:8443/' });
    expect(tokenFromAddress('https://h/?token=s3cret')).toEqual({ token: 's3cret', href: 'https://h/' });
    // A form-encoded query as before (`+` a space); in the fragment `+` is a plus.
    expect(tokenFromAddress('https://h/?a=1&token=a%2Bb%20c').token).toBe('a+b c');
    expect(tokenFromAddress('https://h/#token=a+b~c%2F').token).toBe('a+b~c/');
    expect(tokenFromAddress('https://h/?transport=sse&token=t&gateways=https://g1:1,https://g2:2#token=f&x=1')).toEqual({
      token: 'f',
      href: 'https://h/?transport=sse&gateways=https://g1:1,https://g2:2#x=1',
    });
    expect(tokenFromAddress('https://h/?transport=ws')).toEqual({ token: null, href: 'https://h/?transport=ws' });
    // Named but empty: forget the kept one.
    expect(tokenFromAddress('https://h/#token=').token).toBe('');
  });

  const host = (href: string, stored: Record<string, string> = {}) => {
    const calls: string[] = [];
    const h: TokenHost & { calls: string[]; stored: Record<string, string> } = {
      calls,
      stored,
      location: { href },
      history: { state: { s: 1 }, replaceState: (_d, _u, url) => calls.push(url ?? '') },
      sessionStorage: {
        getItem: (k) => stored[k] ?? null,
        setItem: (k, v) => void (stored[k] = v),
        removeItem: (k) => void delete stored[k],
      },
    };
    return h;
  };

  it('takes it from the address, clears the address bar and keeps it for reloads of the tab', () => {
    const first = host('https://h/?transport=poll#token=tw_k_s', {});
    expect(takeToken(first)).toBe('tw_k_s');
    expect(first.calls).toEqual(['https://h/?transport=poll']);
    expect(first.stored[TOKEN_KEY]).toBe('tw_k_s');
    // The reload: the address has no token any more.
    const reload = host('https://h/?transport=poll', first.stored);
    expect(takeToken(reload)).toBe('tw_k_s');
    expect(reload.calls).toEqual([]);
    // A new token in the address replaces the kept one; an empty one forgets it.
    expect(takeToken(host('https://h/?token=old2', first.stored))).toBe('old2');
    expect(first.stored[TOKEN_KEY]).toBe('old2');
    expect(takeToken(host('https://h/#token=', first.stored))).toBeNull();
    expect(first.stored).toEqual({});
    expect(takeToken(host('https://h/', first.stored))).toBeNull();
  });

  it('works without storage (disabled, or throwing)', () => {
    const h = host('https://h/#token=t');
    h.sessionStorage = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('denied');
      },
      removeItem: () => {},
    };
    expect(takeToken(h)).toBe('t');
    expect(h.calls).toEqual(['https://h/']);
    h.location.href = 'https://h/';
    expect(takeToken(h)).toBeNull();
    const stored: Record<string, string> = {};
    keepToken(host('https://h/', stored), 'typed');
    expect(stored[TOKEN_KEY]).toBe('typed');
  });

  it('headers', () => {
    expect(authHeaders('t')).toEqual({ authorization: 'Bearer t' });
    expect(authHeaders(null)).toEqual({});
  });
});

describe('streams carry the token, never in a URL', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
    FakeSse.reset();
  });
  afterEach(() => vi.useRealTimers());

  const make = (token: string | null, over: Partial<ConstructorParameters<typeof StreamClient>[0]> = {}) => {
    const poll = new FakePoll();
    const client = new StreamClient({
      baseUrl: 'http://gw.test:8080',
      WebSocket: FakeWebSocket,
      fetch: poll.fetch,
      heartbeatMs: 0,
      token,
      onEvent: () => {},
      ...over,
    });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    return { client, poll };
  };

  it('WebSocket and replay as a subprotocol, SSE and long-poll as a header', async () => {
    make('s3cret');
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/ws');
    expect(FakeWebSocket.last.protocols).toEqual(['tickwire.v1.json', 'bearer.s3cret']);
    make('s3cret', { wsPath: '/v1/replay?symbols=A&speed=max', transports: ['ws'], sendSubscribe: false });
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/replay?symbols=A&speed=max');
    expect(FakeWebSocket.last.protocols).toEqual(['tickwire.v1.json', 'bearer.s3cret']);
    make('s3cret', { WebSocket: null });
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes');
    expect(FakeSse.last.headers).toEqual({ accept: 'text/event-stream', authorization: 'Bearer s3cret' });
    const { poll } = make('s3cret', { transports: ['poll'] });
    await vi.advanceTimersByTimeAsync(0);
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes');
    expect(poll.last.headers).toEqual({ authorization: 'Bearer s3cret' });
    poll.respond({ cursor: 'c1', messages: [] });
    await vi.advanceTimersByTimeAsync(0);
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes&cursor=c1');
    expect(poll.last.headers).toEqual({ authorization: 'Bearer s3cret' });
  });

  it('a token a subprotocol cannot hold skips the WebSocket for SSE (a header), never the URL', () => {
    const { client } = make('a/b=');
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(client.transport).toBe('sse');
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes');
    expect(FakeSse.last.headers.authorization).toBe('Bearer a/b=');
    // Forced onto WebSocket, it does not connect at all.
    const forced = make('a/b=', { transports: ['ws'] });
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(forced.client.state.phase).toBe('closed');
  });

  it('without a token: no subprotocol, no header', () => {
    make(null);
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/ws');
    expect(FakeWebSocket.last.protocols).toBeUndefined();
    make(null, { WebSocket: null });
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes');
    expect(FakeSse.last.headers).toEqual({ accept: 'text/event-stream' });
  });
});

describe('REST calls carry the token', () => {
  afterEach(() => {
    setApiToken(null);
    vi.unstubAllGlobals();
  });

  it('as a bearer header on every call, and no header without one', async () => {
    const seen: { url: string; headers: Record<string, string> }[] = [];
    vi.stubGlobal('fetch', async (url: string, init: { headers: Record<string, string> }) => {
      seen.push({ url, headers: init.headers });
      return { ok: true, status: 200, json: async () => ({ instruments: [], snapshots: [], candles: [], feeds: [] }) };
    });
    setApiToken('s3cret');
    await api.instruments();
    await api.snapshot(['BTC-USD']);
    await api.candles('BTC-USD', '1m', 1n, 2n);
    await api.feeds();
    await api.stats();
    expect(seen).toHaveLength(5);
    for (const s of seen) expect(s.headers).toMatchObject({ authorization: 'Bearer s3cret' });
    expect(seen.every((s) => !s.url.includes('token='))).toBe(true);
    setApiToken(null);
    await api.instruments();
    expect(seen.at(-1)!.headers).not.toHaveProperty('authorization');
  });
});
