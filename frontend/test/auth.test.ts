import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { api, setApiToken } from '../src/api';
import { authHeaders, tokenFromSearch, withToken } from '../src/auth';
import { StreamClient } from '../src/stream/client';
import { FakeEventSource, FakePoll, FakeWebSocket } from './fakes';

describe('token helpers', () => {
  it('reads ?token= from the page address', () => {
    expect(tokenFromSearch('?token=s3cret')).toBe('s3cret');
    expect(tokenFromSearch('?a=1&token=a%2Bb%20c')).toBe('a+b c');
    expect(tokenFromSearch('')).toBeNull();
    expect(tokenFromSearch('?token=')).toBeNull();
  });

  it('adds token= to URLs, encoded, and leaves them alone without one', () => {
    expect(withToken('ws://h/v1/ws', 't')).toBe('ws://h/v1/ws?token=t');
    expect(withToken('http://h/v1/sse?symbols=A&channels=quotes', 'a+b/c')).toBe('http://h/v1/sse?symbols=A&channels=quotes&token=a%2Bb%2Fc');
    expect(withToken('http://h/v1/poll?', 't')).toBe('http://h/v1/poll?token=t');
    expect(withToken('http://h/x#frag', 't')).toBe('http://h/x?token=t#frag');
    expect(withToken('ws://h/v1/ws', null)).toBe('ws://h/v1/ws');
    expect(withToken('ws://h/v1/ws', '')).toBe('ws://h/v1/ws');
    expect(authHeaders('t')).toEqual({ authorization: 'Bearer t' });
    expect(authHeaders(null)).toEqual({});
  });
});

describe('streams carry the token, in a URL only where nothing else can', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
    FakeEventSource.reset();
  });
  afterEach(() => vi.useRealTimers());

  const make = (token: string | null, over: Partial<ConstructorParameters<typeof StreamClient>[0]> = {}) => {
    const poll = new FakePoll();
    const client = new StreamClient({
      baseUrl: 'http://gw.test:8080',
      WebSocket: FakeWebSocket,
      EventSource: FakeEventSource,
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

  it('WebSocket and replay as a subprotocol, long-poll as a header, SSE in its URL', async () => {
    make('s3cret');
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/ws');
    expect(FakeWebSocket.last.protocols).toEqual(['tickwire.v1.json', 'bearer.s3cret']);
    make('s3cret', { wsPath: '/v1/replay?symbols=A&speed=max', transports: ['ws'], sendSubscribe: false });
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/replay?symbols=A&speed=max');
    expect(FakeWebSocket.last.protocols).toEqual(['tickwire.v1.json', 'bearer.s3cret']);
    // EventSource can send nothing but its URL.
    make('s3cret', { WebSocket: null });
    expect(FakeEventSource.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes&token=s3cret');
    const { poll } = make('s3cret', { WebSocket: null, EventSource: null });
    await vi.advanceTimersByTimeAsync(0);
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes');
    expect(poll.last.headers).toEqual({ authorization: 'Bearer s3cret' });
    poll.respond({ cursor: 'c1', messages: [] });
    await vi.advanceTimersByTimeAsync(0);
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes&cursor=c1');
    expect(poll.last.headers).toEqual({ authorization: 'Bearer s3cret' });
  });

  it('a token a subprotocol cannot hold goes in the WebSocket URL', () => {
    make('a/b=');
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/ws?token=a%2Fb%3D');
    expect(FakeWebSocket.last.protocols).toBeUndefined();
  });

  it('without a token the URLs are unchanged', () => {
    make(null);
    expect(FakeWebSocket.last.url).toBe('ws://gw.test:8080/v1/ws');
    expect(FakeWebSocket.last.protocols).toBeUndefined();
    make(null, { WebSocket: null });
    expect(FakeEventSource.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes');
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
