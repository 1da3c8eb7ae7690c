import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { getJson, setApiBase } from '../src/api';
import { type ConnState, StreamClient, type StreamClientOptions, type StreamEvent } from '../src/stream/client';
import { GatewayList, gatewaysFromSearch, hostPort, toOrigin } from '../src/stream/gateways';
import { FakePoll, FakeSse, FakeWebSocket, clocks } from './fakes';

const G1 = 'http://127.0.0.1:8080';
const G2 = 'http://127.0.0.1:8081';
const G3 = 'http://10.0.0.3:9000';

describe('the gateway list from ?gateways=', () => {
  it('without the parameter: the page origin alone (as before)', () => {
    expect(gatewaysFromSearch('', G1)).toEqual([G1]);
    expect(gatewaysFromSearch('?token=x&transport=ws', G1)).toEqual([G1]);
    expect(gatewaysFromSearch('?gateways=', G1)).toEqual([G1]);
  });

  it('origins in order, normalised, without duplicates or unusable entries', () => {
    expect(gatewaysFromSearch(`?gateways=${G1},${G2}`, G1)).toEqual([G1, G2]);
    // Encoded, with paths, trailing slashes, spaces, a repeat and a bad one.
    const q = `?token=t&gateways=${encodeURIComponent(`${G2}/v1/ws, ${G1}/,ftp://x.test,,not a url,${G2}`)}`;
    expect(gatewaysFromSearch(q, G1)).toEqual([G2, G1]);
    // host:port takes the page's scheme; a repeated parameter adds more.
    expect(gatewaysFromSearch('?gateways=gw1.test:8443&gateways=https://gw2.test', 'https://dash.test')).toEqual(['https://gw1.test:8443', 'https://gw2.test']);
    expect(gatewaysFromSearch('?gateways=ftp://x.test,%20', G1)).toEqual([G1]);
  });

  it('toOrigin and hostPort', () => {
    expect(toOrigin('HTTP://Example.TEST:80/x?y')).toBe('http://example.test');
    expect(toOrigin('ws://a.test')).toBeNull();
    expect(toOrigin('')).toBeNull();
    expect(hostPort(G2)).toBe('127.0.0.1:8081');
    expect(hostPort('http://example.test')).toBe('example.test:80');
    expect(hostPort('https://example.test')).toBe('example.test:443');
    expect(hostPort('http://[::1]:8080')).toBe('[::1]:8080');
  });
});

describe('GatewayList rotation', () => {
  it('starts at the page origin when listed, else the first, and wraps around', () => {
    const l = new GatewayList([G1, G2, G3], G2);
    expect([l.current, l.index, l.size]).toEqual([G2, 1, 3]);
    expect(l.advance()).toBe(G3);
    expect(l.advance()).toBe(G1);
    expect(l.advance()).toBe(G2);
    expect(new GatewayList([G1, G2], 'http://elsewhere.test').current).toBe(G1);
    expect(new GatewayList([G1]).advance()).toBe(G1);
    expect(() => new GatewayList([])).toThrow();
  });
});

// ---- the stream client across gateways ------------------------------------

const trade = (symbol: string, seq: number) => ({ symbol, channel: 'trades', seq, price: '100.5', size: '0.1', side: 'buy', trade_id: seq, ...clocks() });
const tradeSnap = (symbol: string, seq: number, epoch: number) => ({
  type: 'snapshot',
  symbol,
  channel: 'trades',
  seq,
  epoch,
  data: { price: '1', size: '1', side: 'buy', trade_id: 1 },
  ...clocks(),
});
const batch = (...updates: unknown[]) => ({ type: 'batch', updates });
const EPOCH = 1_796_401_165_372_073;

function setup(urls: string[], over: Partial<StreamClientOptions> = {}) {
  const events: StreamEvent[] = [];
  const states: ConnState[] = [];
  const poll = new FakePoll();
  const gateways = new GatewayList(urls);
  const client = new StreamClient({
    gateways,
    WebSocket: FakeWebSocket,
    fetch: poll.fetch,
    random: () => 0.5,
    heartbeatMs: 0,
    onEvent: (e) => events.push(e),
    onState: (s) => states.push(s),
    ...over,
  });
  const updates = () => events.flatMap((e) => (e.kind === 'update' ? [e.update] : []));
  const gaps = () => events.filter((e) => e.kind === 'gap');
  return { client, gateways, events, states, poll, updates, gaps };
}

/** Hosts the client opened WebSockets to, in order. */
const wsHosts = () => FakeWebSocket.instances.map((w) => new URL(w.url).host);
const retry = () => vi.advanceTimersByTimeAsync(10_000);

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
  FakeSse.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('StreamClient with several gateways', () => {
  it('a lost gateway: retried once, then the next one, resumed with since and epoch, no gap and no duplicate', async () => {
    const { client, states, updates, gaps } = setup([G1, G2]);
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    expect(FakeWebSocket.last.url).toBe('ws://127.0.0.1:8080/v1/ws');
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(tradeSnap('BTC-USD', 10, EPOCH));
    FakeWebSocket.last.push(batch(trade('BTC-USD', 11), trade('BTC-USD', 12)));
    expect(states.at(-1)).toMatchObject({ label: 'live', gateway: G1 });

    // Gateway 1 dies: the drop is retried on it first (it may only have blipped)...
    FakeWebSocket.last.drop();
    expect(client.gateway).toBe(G1);
    await retry();
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8080']);
    // ...that is refused, so the next attempt goes to gateway 2.
    FakeWebSocket.last.drop();
    expect(client.gateway).toBe(G2);
    expect(states.at(-1)).toMatchObject({ phase: 'reconnecting', gateway: G2 });
    await retry();
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8080', '127.0.0.1:8081']);
    FakeWebSocket.last.open();
    expect(states.at(-1)).toMatchObject({ label: 'live', gateway: G2 });
    // The resume is exactly what a reconnect to the same server sends.
    expect(FakeWebSocket.last.ops).toEqual([{ op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'], since: { 'BTC-USD': 12 }, epoch: EPOCH }]);
    // Gateway 2 answers from its ring, overlapping what we had: each trade once, in order.
    FakeWebSocket.last.push(batch(trade('BTC-USD', 12), trade('BTC-USD', 13), trade('BTC-USD', 14)));
    expect(updates().map((u) => u.seq)).toEqual([11, 12, 13, 14]);
    expect(gaps()).toEqual([]);
    expect(client.epochOf('trades', 'BTC-USD')).toBe(EPOCH);
  });

  it('connect refused: each attempt goes to the next gateway, round and round', async () => {
    const { client } = setup([G1, G2, G3], { failuresBeforeFallback: 100 });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    for (let i = 0; i < 4; i++) {
      FakeWebSocket.last.drop();
      await retry();
    }
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8081', '10.0.0.3:9000', '127.0.0.1:8080', '127.0.0.1:8081']);
    FakeWebSocket.last.open();
    expect(client.state).toMatchObject({ phase: 'live', gateway: G2, attempt: 0 });
  });

  it('close code 1001 (the gateway is shutting down) moves on at once', async () => {
    const { client } = setup([G1, G2]);
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.drop(1001);
    await retry();
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8081']);
  });

  it('a connection that drops and re-opens stays on its gateway', async () => {
    const { client } = setup([G1, G2]);
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    client.dropConnection();
    await retry();
    FakeWebSocket.last.open();
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8080']);
    expect(client.gateway).toBe(G1);
  });

  it('tries every gateway before giving up on WebSocket; SSE and poll follow the gateway too', async () => {
    const { client, poll } = setup([G1, G2, G3], { failuresBeforeFallback: 2 });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    for (let i = 0; i < 2; i++) {
      FakeWebSocket.last.drop();
      await retry();
    }
    // Two failures would have been enough with one gateway; three gateways get a try each.
    expect(client.transport).toBe('ws');
    FakeWebSocket.last.drop();
    expect(client.transport).toBe('sse');
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8081', '10.0.0.3:9000']);
    expect(new URL(FakeSse.last.url).host).toBe('127.0.0.1:8080');
    FakeSse.last.fail();
    await retry();
    expect(new URL(FakeSse.last.url).host).toBe('127.0.0.1:8081');
    FakeSse.last.fail();
    await retry();
    FakeSse.last.fail();
    await vi.advanceTimersByTimeAsync(0);
    expect(client.transport).toBe('poll');
    await vi.advanceTimersByTimeAsync(0);
    expect(new URL(poll.last.url).host).toBe('127.0.0.1:8080');
  });

  it('one gateway (baseUrl): a refused reconnect stays where it is, as before', async () => {
    const { client } = setup([G1]);
    const single = new StreamClient({ baseUrl: G2, WebSocket: FakeWebSocket, heartbeatMs: 0, random: () => 0.5, onEvent: () => {} });
    expect(single.gateway).toBe(G2);
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.drop(1001);
    await retry();
    FakeWebSocket.last.drop();
    await retry();
    expect(wsHosts()).toEqual(['127.0.0.1:8080', '127.0.0.1:8080', '127.0.0.1:8080']);
  });
});

describe('REST calls follow the gateway in use', () => {
  afterEach(() => {
    setApiBase(() => '');
    vi.unstubAllGlobals();
  });

  it('prefixes the current gateway, read on every call', async () => {
    vi.useRealTimers();
    const seen: string[] = [];
    vi.stubGlobal('fetch', async (url: string) => {
      seen.push(url);
      return { ok: true, status: 200, json: async () => ({}) };
    });
    await getJson('/v1/instruments');
    const gateways = new GatewayList([G1, G2]);
    setApiBase(() => gateways.current);
    await getJson('/v1/instruments');
    gateways.advance();
    await getJson('/v1/feeds');
    expect(seen).toEqual(['/v1/instruments', `${G1}/v1/instruments`, `${G2}/v1/feeds`]);
  });
});
