import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_BACKOFF, backoffDelay } from '../src/stream/backoff';
import { type ConnState, StreamClient, type StreamClientOptions, type StreamEvent, subscribeOps } from '../src/stream/client';
import { FakePoll, FakeSse, FakeWebSocket, clocks } from './fakes';

const flush = () => vi.advanceTimersByTimeAsync(0);

function setup(over: Partial<StreamClientOptions> = {}) {
  const events: StreamEvent[] = [];
  const states: ConnState[] = [];
  const poll = new FakePoll();
  const client = new StreamClient({
    baseUrl: 'http://gw.test:8080',
    WebSocket: FakeWebSocket,
    fetch: poll.fetch,
    random: () => 0.5,
    heartbeatMs: 0,
    onEvent: (e) => events.push(e),
    onState: (s) => states.push(s),
    ...over,
  });
  const kinds = () => events.map((e) => e.kind);
  const updates = () => events.flatMap((e) => (e.kind === 'update' ? [e.update] : []));
  return { client, events, states, poll, kinds, updates };
}

const quote = (symbol: string, seq: number) => ({ symbol, channel: 'quotes', seq, bid: '1.00', bid_size: '1', ask: '1.01', ask_size: '2', ...clocks() });
const trade = (symbol: string, seq: number) => ({ symbol, channel: 'trades', seq, price: '100.5', size: '0.1', side: 'buy', trade_id: seq, ...clocks() });
const bookDelta = (symbol: string, seq: number, bids: [string, string][] = [['100', '1']]) => ({ symbol, channel: 'book', seq, bids, asks: [], ...clocks() });
const snapshot = (symbol: string, channel: string, seq: number, data: unknown = null) => ({ type: 'snapshot', symbol, channel, seq, data, ...clocks() });
const batch = (...updates: unknown[]) => ({ type: 'batch', updates });
const candleData = (start: number, close: string, closed: boolean) => ({ start, open: '1.00', high: '9.00', low: '0.50', close, volume: '2', trades: 3, closed });
const candleUpd = (symbol: string, channel: string, seq: number, start: number, closed: boolean) => ({ symbol, channel, seq, ...candleData(start, '2.00', closed), ...clocks() });

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
  FakeSse.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('backoffDelay', () => {
  it('grows exponentially with equal jitter and is capped at ~10 s', () => {
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 0)).toBe(125);
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 1)).toBe(250);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 1)).toBe(2000);
    for (let a = 0; a < 40; a++) {
      const d = backoffDelay(a, DEFAULT_BACKOFF, Math.random);
      expect(d).toBeLessThanOrEqual(10_000);
      expect(d).toBeGreaterThanOrEqual(Math.min(10_000, 250 * 2 ** a) / 2);
    }
    expect(backoffDelay(30, DEFAULT_BACKOFF, () => 0)).toBe(5_000);
  });
});

describe('StreamClient over WebSocket', () => {
  it('connects to /v1/ws on the same origin and subscribes per channel on open', () => {
    const { client, states } = setup();
    client.subscribe(['quotes', 'trades'], ['BTC-USD', 'ETH-USD']);
    client.subscribe(['book'], ['BTC-USD']);
    client.start();
    const ws = FakeWebSocket.last;
    expect(ws.url).toBe('ws://gw.test:8080/v1/ws');
    expect(states.at(-1)?.label).toBe('connecting');
    ws.open();
    expect(states.at(-1)?.label).toBe('live');
    expect(ws.ops).toEqual([
      { op: 'subscribe', channels: ['quotes'], symbols: ['BTC-USD', 'ETH-USD'] },
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD', 'ETH-USD'] },
      { op: 'subscribe', channels: ['book'], symbols: ['BTC-USD'] },
    ]);
  });

  it('sends subscribe/unsubscribe for changes while connected', () => {
    const { client } = setup();
    client.start();
    FakeWebSocket.last.open();
    client.subscribe(['quotes'], ['SOL-USD']);
    client.subscribe(['quotes'], ['SOL-USD']); // no-op
    client.unsubscribe(['quotes', 'book'], ['SOL-USD']);
    expect(FakeWebSocket.last.ops).toEqual([
      { op: 'subscribe', channels: ['quotes'], symbols: ['SOL-USD'] },
      { op: 'unsubscribe', channels: ['quotes'], symbols: ['SOL-USD'] },
    ]);
  });

  it('reconnects with exponential backoff and jitter, capped, and resets after a successful open', async () => {
    const { client, states } = setup();
    client.start();
    FakeWebSocket.last.open(); // opened once: never falls back to SSE after this
    const expected = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000].map((d) => Math.round(d * 0.75)); // random = 0.5
    for (const delay of expected) {
      const before = FakeWebSocket.instances.length;
      FakeWebSocket.last.drop();
      expect(states.at(-1)?.label).toBe('reconnecting');
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(FakeWebSocket.instances.length).toBe(before);
      await vi.advanceTimersByTimeAsync(1);
      expect(FakeWebSocket.instances.length).toBe(before + 1);
    }
    expect(FakeSse.instances).toHaveLength(0);
    FakeWebSocket.last.open();
    expect(states.at(-1)).toMatchObject({ label: 'live', attempt: 0 });
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(188);
    expect(FakeWebSocket.last.readyState).toBe(0); // new attempt after the base delay again
  });

  it('resumes trades with since = last seq per symbol; quotes and book restart from snapshots', async () => {
    const { client } = setup();
    client.subscribe(['quotes', 'trades'], ['BTC-USD', 'ETH-USD']);
    client.subscribe(['book'], ['BTC-USD']);
    client.start();
    const ws = FakeWebSocket.last;
    ws.open();
    ws.push(snapshot('BTC-USD', 'trades', 10, { price: '1', size: '1', side: 'buy', trade_id: 1 }));
    ws.push(batch(trade('BTC-USD', 11), trade('BTC-USD', 12), quote('ETH-USD', 4)));
    ws.push(snapshot('BTC-USD', 'book', 40, { bids: [], asks: [] }));
    ws.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    const ws2 = FakeWebSocket.last;
    expect(ws2).not.toBe(ws);
    ws2.open();
    expect(ws2.ops).toEqual([
      { op: 'subscribe', channels: ['quotes'], symbols: ['BTC-USD', 'ETH-USD'] },
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD', 'ETH-USD'], since: { 'BTC-USD': 12 } },
      { op: 'subscribe', channels: ['book'], symbols: ['BTC-USD'] },
    ]);
    expect(client.seqOf('book', 'BTC-USD')).toBeUndefined();
  });

  it('after a resume, drops the overlap and passes on the missed updates in order', async () => {
    const { client, updates } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 1), trade('BTC-USD', 2)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 2), trade('BTC-USD', 3), trade('BTC-USD', 4)));
    expect(updates().map((u) => u.seq)).toEqual([1, 2, 3, 4]);
  });

  it('starts over when a resumed stream restarts its sequence (server restarted)', async () => {
    const { client, updates, events } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 500)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 3), trade('BTC-USD', 4), trade('BTC-USD', 4)));
    expect(updates().map((u) => u.seq)).toEqual([500, 3, 4]);
    expect(events.find((e) => e.kind === 'gap')).toMatchObject({ reason: 'sequence_reset' });
  });

  it('subscribes afresh when the server rejects a since that is ahead of it (bad_since)', async () => {
    const { client, updates } = setup();
    client.subscribe(['trades'], ['BTC-USD', 'ETH-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 900), trade('ETH-USD', 40)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    const ws = FakeWebSocket.last;
    ws.open();
    expect(ws.ops[0]).toMatchObject({ since: { 'BTC-USD': 900, 'ETH-USD': 40 } });
    ws.push(batch(trade('ETH-USD', 41))); // ETH resumed fine
    ws.push({ type: 'error', code: 'bad_since', message: 'since 900 is ahead of BTC-USD trades at 12', op: 'subscribe' });
    expect(ws.ops.at(-1)).toEqual({ op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'] });
    ws.push(snapshot('BTC-USD', 'trades', 12, { price: '1', size: '1', side: 'buy', trade_id: 1 }));
    ws.push(batch(trade('BTC-USD', 13)));
    expect(updates().map((u) => `${u.symbol}:${u.seq}`)).toEqual(['BTC-USD:900', 'ETH-USD:40', 'ETH-USD:41', 'BTC-USD:13']);
  });

  it('streams live candles: subscribes the channel, accepts conflation skips, resumes it with since', async () => {
    const { client, updates, events } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.subscribe(['candles.1m'], ['BTC-USD']);
    client.start();
    const ws = FakeWebSocket.last;
    ws.open();
    expect(ws.ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'] },
      { op: 'subscribe', channels: ['candles.1m'], symbols: ['BTC-USD'] },
    ]);
    ws.push(snapshot('BTC-USD', 'candles.1m', 20, candleData(60e9, '5.00', false)));
    ws.push(batch(candleUpd('BTC-USD', 'candles.1m', 21, 60e9, false), candleUpd('BTC-USD', 'candles.1m', 24, 60e9, true), candleUpd('BTC-USD', 'candles.1m', 24, 60e9, true)));
    ws.push(batch(candleUpd('BTC-USD', 'candles.5m', 1, 0, false))); // not subscribed
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['candles.1m:21', 'candles.1m:24']);
    expect(events.some((e) => e.kind === 'gap')).toBe(false); // a candle skip is conflation, not loss
    ws.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    expect(ws2.ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'] },
      { op: 'subscribe', channels: ['candles.1m'], symbols: ['BTC-USD'], since: { 'BTC-USD': 24 } },
    ]);
    ws2.push(batch(candleUpd('BTC-USD', 'candles.1m', 25, 120e9, false)));
    expect(updates().at(-1)).toMatchObject({ channel: 'candles.1m', seq: 25, start: 120e9 });
    client.unsubscribe(['candles.1m'], ['BTC-USD']);
    expect(ws2.ops.at(-1)).toEqual({ op: 'unsubscribe', channels: ['candles.1m'], symbols: ['BTC-USD'] });
  });

  it('on a bad_since that names its stream, restarts only that stream', async () => {
    const { client, updates, events } = setup();
    client.subscribe(['trades', 'candles.1s'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 900), candleUpd('BTC-USD', 'candles.1s', 70, 1e9, false)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    const ws = FakeWebSocket.last;
    ws.open();
    const sent = ws.ops.length;
    ws.push({ type: 'error', code: 'bad_since', message: 'resume refused', op: 'subscribe', symbol: 'BTC-USD', channel: 'candles.1s' });
    expect(events.at(-1)).toEqual({ kind: 'error', code: 'bad_since', message: 'resume refused', symbol: 'BTC-USD', channel: 'candles.1s' });
    expect(ws.ops.slice(sent)).toEqual([{ op: 'subscribe', channels: ['candles.1s'], symbols: ['BTC-USD'] }]);
    expect(client.seqOf('candles.1s', 'BTC-USD')).toBeUndefined();
    expect(client.seqOf('trades', 'BTC-USD')).toBe(900); // still resuming
    ws.push(snapshot('BTC-USD', 'candles.1s', 3, candleData(5e9, '1.00', false)));
    ws.push(batch(trade('BTC-USD', 901), candleUpd('BTC-USD', 'candles.1s', 4, 5e9, false)));
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['trades:900', 'candles.1s:70', 'trades:901', 'candles.1s:4']);
  });

  it('ignores stale callbacks from a socket it has replaced', async () => {
    const { client, updates } = setup();
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    const old = FakeWebSocket.last;
    old.open();
    old.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    old.push(batch(quote('BTC-USD', 1)));
    expect(updates()).toHaveLength(0);
  });

  it('treats a silent connection as dead (heartbeat) and pings meanwhile', async () => {
    const { client } = setup({ heartbeatMs: 1_000, idleTimeoutMs: 3_000 });
    client.start();
    const ws = FakeWebSocket.last;
    ws.open();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(ws.ops).toContainEqual({ op: 'ping', id: 1 });
    ws.push({ type: 'pong', id: 1 });
    await vi.advanceTimersByTimeAsync(4_000);
    expect(ws.closedByClient).toBe(true);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeWebSocket.instances.length).toBe(2);
  });

  it('reports a server-chosen close code and still reconnects', async () => {
    const { client, events } = setup();
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.onclose?.({ code: 4008, reason: 'slow consumer' });
    expect(events).toEqual([{ kind: 'error', code: 'closed_4008', message: 'slow consumer' }]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it('stop() closes the socket and never reconnects', async () => {
    const { client, states } = setup();
    client.start();
    FakeWebSocket.last.open();
    client.stop();
    expect(FakeWebSocket.last.closedByClient).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(states.at(-1)?.label).toBe('closed');
  });
});

describe('sequence handling', () => {
  function live() {
    const t = setup();
    t.client.subscribe(['quotes', 'trades', 'book'], ['BTC-USD']);
    t.client.start();
    FakeWebSocket.last.open();
    return { ...t, ws: FakeWebSocket.last };
  }

  it('applies a batch in order and drops duplicates per symbol and channel', () => {
    const { ws, updates } = live();
    ws.push(snapshot('BTC-USD', 'quotes', 5, { bid: '1', bid_size: '1', ask: '2', ask_size: '1' }));
    ws.push(batch(quote('BTC-USD', 5), quote('BTC-USD', 6), trade('BTC-USD', 1), quote('BTC-USD', 6), trade('BTC-USD', 2), trade('BTC-USD', 1)));
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['quotes:6', 'trades:1', 'trades:2']);
  });

  it('accepts a quote sequence skip silently (conflation) but reports a trade skip as a gap', () => {
    const { ws, events, updates } = live();
    ws.push(batch(quote('BTC-USD', 1), quote('BTC-USD', 9), trade('BTC-USD', 1), trade('BTC-USD', 5)));
    expect(updates().map((u) => u.seq)).toEqual([1, 9, 1, 5]);
    const gaps = events.filter((e) => e.kind === 'gap');
    expect(gaps).toEqual([{ kind: 'gap', symbol: 'BTC-USD', channel: 'trades', from_seq: 2, to_seq: 4, reason: 'sequence_skip', origin: 'client' }]);
  });

  it('ignores book deltas before a snapshot, applies seq+1, and on a break drops the book and asks for a snapshot', () => {
    const { ws, events, updates } = live();
    ws.push(batch(bookDelta('BTC-USD', 3)));
    expect(updates()).toHaveLength(0);
    ws.push(snapshot('BTC-USD', 'book', 10, { bids: [['100', '1']], asks: [['101', '1']] }));
    ws.push(batch(bookDelta('BTC-USD', 10), bookDelta('BTC-USD', 11), bookDelta('BTC-USD', 13), bookDelta('BTC-USD', 14)));
    expect(updates().map((u) => u.seq)).toEqual([11]);
    expect(events.filter((e) => e.kind === 'book_reset')).toHaveLength(1);
    expect(ws.ops.slice(-2)).toEqual([
      { op: 'unsubscribe', channels: ['book'], symbols: ['BTC-USD'] },
      { op: 'subscribe', channels: ['book'], symbols: ['BTC-USD'] },
    ]);
    ws.push(snapshot('BTC-USD', 'book', 20, { bids: [], asks: [] }));
    ws.push(batch(bookDelta('BTC-USD', 21)));
    expect(updates().map((u) => u.seq)).toEqual([11, 21]);
  });

  it('passes on server gaps and does not report the same hole again', () => {
    const { ws, events } = live();
    ws.push(batch(trade('BTC-USD', 1)));
    ws.push({ type: 'gap', symbol: 'BTC-USD', channel: 'trades', from_seq: 2, to_seq: 40, reason: 'history_exhausted' });
    ws.push(batch(trade('BTC-USD', 41)));
    const gaps = events.filter((e) => e.kind === 'gap');
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ origin: 'server', from_seq: 2, to_seq: 40 });
  });

  it('book_invalidated drops the book until the next snapshot', () => {
    const { ws, kinds, updates } = live();
    ws.push(snapshot('BTC-USD', 'book', 1, { bids: [], asks: [] }));
    ws.push({ type: 'book_invalidated', symbol: 'BTC-USD' });
    ws.push(batch(bookDelta('BTC-USD', 2)));
    expect(kinds()).toContain('book_reset');
    expect(updates()).toHaveLength(0);
  });

  it('filters symbols and channels it is not subscribed to, and ignores garbage frames', () => {
    const { ws, events } = live();
    ws.push(batch(quote('ETH-USD', 1)));
    ws.push(snapshot('ETH-USD', 'quotes', 1));
    ws.push('not json');
    ws.push({ no: 'type' });
    expect(events).toHaveLength(0);
  });

  it('reports errors and pongs with round-trip time and clock offset', () => {
    const { client, ws, events } = live();
    const sentAt = Date.now();
    const id = client.ping()!;
    vi.advanceTimersByTime(8);
    ws.push({ type: 'pong', id });
    // The server stamped its pong 250 ms behind this browser's midpoint of the trip.
    const id2 = client.ping()!;
    vi.advanceTimersByTime(8);
    ws.push({ type: 'pong', id: id2, ts_send: (sentAt + 8 + 4 - 250) * 1e6 });
    ws.push({ type: 'error', code: 'unknown_symbol', message: 'no instrument NOPE', op: 'subscribe' });
    // Nanoseconds since the epoch are past 2^53: a JS number holds them to ~0.25 µs.
    const offset = (events[1] as { clockOffsetMs: number }).clockOffsetMs;
    expect(offset).toBeCloseTo(-250, 2);
    expect(events).toEqual([
      { kind: 'pong', id, rttMs: 8, clockOffsetMs: null },
      { kind: 'pong', id: id2, rttMs: 8, clockOffsetMs: offset },
      { kind: 'error', code: 'unknown_symbol', message: 'no instrument NOPE' },
    ]);
  });
});

describe('fallback to SSE', () => {
  it('uses SSE at once when window.WebSocket is missing', async () => {
    const { client, states } = setup({ WebSocket: null });
    client.subscribe(['quotes', 'trades'], ['BTC-USD', 'ETH-USD']);
    client.subscribe(['book'], ['BTC-USD']);
    client.start();
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD,ETH-USD&channels=quotes,trades,book');
    expect(FakeSse.last.headers).toEqual({ accept: 'text/event-stream' });
    expect(states.at(-1)?.label).toBe('connecting');
    FakeSse.last.open();
    await flush();
    expect(states.at(-1)?.label).toBe('sse');
  });

  it('uses SSE at once when the WebSocket constructor throws', () => {
    FakeWebSocket.throwOnConstruct = true;
    const { client } = setup();
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    expect(FakeSse.instances).toHaveLength(1);
    expect(client.transport).toBe('sse');
  });

  it('falls back after N WebSocket failures that never opened', async () => {
    const { client } = setup({ failuresBeforeFallback: 3 });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    for (let i = 0; i < 3; i++) {
      expect(FakeSse.instances).toHaveLength(0);
      FakeWebSocket.last.drop();
      await vi.advanceTimersByTimeAsync(10_000);
    }
    expect(FakeWebSocket.instances).toHaveLength(3);
    expect(FakeSse.instances).toHaveLength(1);
    expect(client.transport).toBe('sse');
  });

  it('streams messages over SSE with the same sequence rules, events split across reads', async () => {
    const { client, updates } = setup({ WebSocket: null });
    client.subscribe(['quotes', 'trades'], ['BTC-USD']);
    client.start();
    const sse = FakeSse.last;
    sse.open();
    await flush();
    expect(client.state.label).toBe('sse');
    const text = `id: c1\ndata: ${JSON.stringify(batch(trade('BTC-USD', 1), trade('BTC-USD', 1), quote('BTC-USD', 3)))}\n\n: keep-alive\n\n`;
    sse.write(text.slice(0, 20));
    await flush();
    expect(updates()).toHaveLength(0);
    sse.write(text.slice(20));
    await flush();
    expect(updates().map((u) => u.seq)).toEqual([1, 3]);
    // Named events are not protocol messages (EventSource's onmessage never saw them).
    sse.write(`event: other\ndata: ${JSON.stringify(batch(quote('BTC-USD', 4)))}\n\n`);
    await flush();
    expect(updates().map((u) => u.seq)).toEqual([1, 3]);
  });

  it('only a 200 text/event-stream answer opens the stream', async () => {
    const { client, states } = setup({ WebSocket: null, transports: ['sse'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open(200, 'text/html');
    await flush();
    expect(states.at(-1)?.label).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(10_000);
    FakeSse.last.open(200, 'text/event-stream; charset=utf-8');
    await flush();
    expect(client.state.label).toBe('sse');
  });

  it('reopens the SSE stream (coalesced) when the subscription changes, without a Last-Event-ID', async () => {
    const { client } = setup({ WebSocket: null });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    FakeSse.last.push(snapshot('BTC-USD', 'quotes', 4), '@1,BTC-USD~quotes~4');
    await flush();
    client.subscribe(['quotes'], ['ETH-USD']);
    client.subscribe(['trades'], ['ETH-USD']);
    await flush();
    expect(FakeSse.instances).toHaveLength(2);
    expect(FakeSse.instances[0].closed).toBe(true);
    expect(FakeSse.last.url).toContain('symbols=BTC-USD,ETH-USD&channels=quotes,trades');
    // A new request, as a new EventSource would be: it starts from snapshots.
    expect(FakeSse.last.headers).not.toHaveProperty('last-event-id');
  });

  it('reconnects SSE with backoff once it has worked, and never falls to polling', async () => {
    const { client, states } = setup({ WebSocket: null });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    for (let i = 0; i < 5; i++) {
      FakeSse.last.fail();
      await flush();
      expect(states.at(-1)?.label).toBe('reconnecting');
      await vi.advanceTimersByTimeAsync(10_000);
    }
    expect(FakeSse.instances).toHaveLength(6);
    expect(client.transport).toBe('sse');
  });

  it('reconnects after the server ends the stream, with the backoff of the other transports', async () => {
    const { client, states } = setup({ WebSocket: null });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    FakeSse.last.end();
    await flush();
    expect(states.at(-1)?.label).toBe('reconnecting');
    // attempt 0: 250 ms capped, equal jitter with random 0.5 -> 188 ms
    await vi.advanceTimersByTimeAsync(187);
    expect(FakeSse.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSse.instances).toHaveLength(2);
  });

  it('a reconnect sends the last event id as Last-Event-ID and resumes in place: no snapshot needed, no duplicate', async () => {
    const { client, updates, kinds } = setup({ WebSocket: null });
    client.subscribe(['trades'], ['BTC-USD']);
    client.subscribe(['book'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    const sse = FakeSse.last;
    sse.push(snapshot('BTC-USD', 'book', 10, { bids: [['100', '1']], asks: [] }), '@9,BTC-USD~book~10');
    sse.push(batch(trade('BTC-USD', 1), trade('BTC-USD', 2)), '@9,BTC-USD~book~10,BTC-USD~trades~2');
    // An id-only event (no data) still moves the last event id.
    sse.write('id: @9,BTC-USD~book~11,BTC-USD~trades~2\n\n');
    await flush();
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['trades:1', 'trades:2']);
    sse.fail();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSse.instances).toHaveLength(2);
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=trades,book');
    expect(FakeSse.last.headers['last-event-id']).toBe('@9,BTC-USD~book~11,BTC-USD~trades~2');
    // A second attempt that fails before any event resumes from the same id.
    FakeSse.last.fail();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSse.last.headers['last-event-id']).toBe('@9,BTC-USD~book~11,BTC-USD~trades~2');
    // The server continues every stream after the cursor: the book's deltas
    // apply to the book the client kept (its sequence was not forgotten).
    FakeSse.last.open();
    await flush();
    FakeSse.last.push(batch(bookDelta('BTC-USD', 11), trade('BTC-USD', 2), trade('BTC-USD', 3)), '@9,BTC-USD~book~11,BTC-USD~trades~3');
    await flush();
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['trades:1', 'trades:2', 'book:11', 'trades:3']);
    expect(kinds()).not.toContain('book_reset');
    expect(kinds()).not.toContain('gap');
    expect(client.seqOf('trades', 'BTC-USD')).toBe(3);
  });

  it('sends the token as a bearer header, never in the URL', async () => {
    const { client } = setup({ WebSocket: null, token: 's3cret+/=' });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    expect(FakeSse.last.url).toBe('http://gw.test:8080/v1/sse?symbols=BTC-USD&channels=quotes');
    expect(FakeSse.last.headers.authorization).toBe('Bearer s3cret+/=');
  });

  it('forgets a resume point the server cannot read (400)', async () => {
    const { client } = setup({ WebSocket: null, transports: ['sse'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    FakeSse.last.push(snapshot('BTC-USD', 'quotes', 4), 'garbage');
    await flush();
    FakeSse.last.fail();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSse.last.headers['last-event-id']).toBe('garbage');
    FakeSse.last.open(400, 'application/json', { code: 'bad_cursor', message: 'malformed cursor' });
    await flush();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSse.last.headers).not.toHaveProperty('last-event-id');
  });

  it('says what a refusal (401, 403, 429) was, once per retry loop', async () => {
    const { client, events } = setup({ WebSocket: null, transports: ['sse'] });
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    for (let i = 0; i < 3; i++) {
      FakeSse.last.open(403, 'application/json', { code: 'not_entitled', message: 'this key may not use channels trades' });
      await flush();
      await vi.advanceTimersByTimeAsync(10_000);
    }
    expect(events.filter((e) => e.kind === 'error')).toEqual([{ kind: 'error', code: 'not_entitled', message: 'this key may not use channels trades' }]);
    expect(FakeSse.instances).toHaveLength(4);
  });
});

describe('fallback to long-polling', () => {
  it('polls when SSE cannot be streamed in this browser (no response body), carrying the cursor', async () => {
    FakeSse.noBody = true;
    const { client, poll, updates, states } = setup({ WebSocket: null });
    client.subscribe(['quotes', 'trades'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    expect(client.transport).toBe('poll');
    expect(FakeSse.instances).toHaveLength(1);
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes,trades');
    poll.respond({ cursor: 'c1', messages: [snapshot('BTC-USD', 'quotes', 4, { bid: '1', bid_size: '1', ask: '2', ask_size: '1' })] });
    await flush();
    expect(states.at(-1)?.label).toBe('poll');
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD&channels=quotes,trades&cursor=c1');
    poll.respond({ cursor: 'c2', messages: [] }); // a held poll that timed out empty
    await flush();
    poll.respond({ cursor: 'c3', messages: [batch(quote('BTC-USD', 5), trade('BTC-USD', 1))] });
    await flush();
    expect(poll.last.url).toContain('cursor=c3');
    expect(updates().map((u) => `${u.channel}:${u.seq}`)).toEqual(['quotes:5', 'trades:1']);
  });

  it('falls back to polling after N SSE failures that never opened', async () => {
    const { client, poll } = setup({ WebSocket: null, failuresBeforeFallback: 2 });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.fail();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(FakeSse.instances).toHaveLength(2);
    FakeSse.last.fail();
    await flush();
    expect(client.transport).toBe('poll');
    expect(poll.calls).toHaveLength(1);
  });

  it('goes WebSocket -> SSE -> poll when the first two never work', async () => {
    const { client, poll } = setup({ failuresBeforeFallback: 1 });
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.drop();
    FakeSse.last.fail();
    await flush();
    expect(client.transport).toBe('poll');
    expect(poll.calls).toHaveLength(1);
  });

  it('retries a failed poll with backoff and drops the cursor', async () => {
    const { client, poll, states } = setup({ transports: ['poll'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    await flush();
    poll.respond({ cursor: 'c1', messages: [] });
    await flush();
    poll.fail();
    await flush();
    expect(states.at(-1)?.label).toBe('reconnecting');
    expect(poll.calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(250);
    expect(poll.calls).toHaveLength(3);
    expect(poll.last.url).not.toContain('cursor');
    poll.respond({ error: 'x' }, 500);
    await flush();
    await vi.advanceTimersByTimeAsync(500);
    expect(poll.calls).toHaveLength(4);
  });

  it('restarts the poll without a cursor when the subscription changes', async () => {
    const { client, poll } = setup({ transports: ['poll'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    await flush();
    poll.respond({ cursor: 'c1', messages: [] });
    await flush();
    client.subscribe(['quotes'], ['ETH-USD']);
    await flush();
    expect(poll.last.url).toBe('http://gw.test:8080/v1/poll?symbols=BTC-USD,ETH-USD&channels=quotes');
  });
});

describe('subscription changes over SSE and poll', () => {
  it('reopen the SSE stream without leaving live (no reconnect banner)', async () => {
    const { client, states } = setup({ transports: ['sse'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.open();
    await flush();
    expect(states.at(-1)?.label).toBe('sse');
    const seen = states.length;
    client.subscribe(['quotes'], ['ETH-USD']);
    await flush();
    expect(FakeSse.instances).toHaveLength(2);
    expect(FakeSse.last.url).toContain('symbols=BTC-USD,ETH-USD');
    FakeSse.last.open();
    await flush();
    expect(states.slice(seen).map((s) => s.label)).not.toContain('reconnecting');
    expect(client.state.label).toBe('sse');
    // A reopened stream that fails is a real reconnect.
    FakeSse.last.fail();
    await flush();
    expect(states.at(-1)?.label).toBe('reconnecting');
  });

  it('restart the poll without leaving live', async () => {
    const { client, poll, states } = setup({ transports: ['poll'] });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    await flush();
    poll.respond({ cursor: 'c1', messages: [] });
    await flush();
    const seen = states.length;
    client.unsubscribe(['quotes'], ['BTC-USD']);
    client.subscribe(['quotes'], ['ETH-USD']);
    await flush();
    expect(states.slice(seen).map((s) => s.label)).not.toContain('reconnecting');
    expect(client.state.label).toBe('poll');
  });

  it('a forced transport never falls back', async () => {
    const { client } = setup({ transports: ['sse'], failuresBeforeFallback: 1 });
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeSse.last.fail();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(client.transport).toBe('sse');
    expect(FakeWebSocket.instances).toHaveLength(0);
  });
});

describe('one-shot streams (replay)', () => {
  it('passes replay status and end on, sends controls, and forgets sequences on request', async () => {
    const { client, events, updates } = setup({ wsPath: '/v1/replay?symbols=BTC-USD', transports: ['ws'], reconnect: false, sendSubscribe: false });
    client.subscribe(['trades'], ['BTC-USD']);
    expect(client.control({ op: 'pause' })).toBe(false); // not open yet
    client.start();
    const ws = FakeWebSocket.last;
    ws.open();
    ws.push({ type: 'replay', state: 'playing', speed: 'max', at: 5, from: 1, to: 9 });
    ws.push(batch(trade('BTC-USD', 7)));
    expect(client.control({ op: 'seek', to: 2 })).toBe(true);
    expect(JSON.parse(ws.sent.at(-1)!)).toEqual({ op: 'seek', to: 2 });
    ws.push({ type: 'replay', state: 'playing', speed: 'max', at: 2, from: 1, to: 9 });
    // Without a reset, an earlier seq after a seek back is dropped as a duplicate...
    ws.push(batch(trade('BTC-USD', 3)));
    expect(updates()).toHaveLength(1);
    client.resetSequences();
    ws.push(batch(trade('BTC-USD', 3)));
    expect(updates()).toHaveLength(2);
    ws.push({ type: 'end', events: 2, from: 1, to: 9 });
    expect(events.filter((e) => e.kind === 'replay')).toHaveLength(2);
    expect(events.at(-1)).toEqual({ kind: 'replay_end', end: { type: 'end', events: 2, from: 1, to: 9 } });
  });

  it('sends no subscribe ops, filters by its subscriptions and closes for good when the server ends', async () => {
    const { client, states, updates } = setup({ wsPath: '/v1/replay?symbols=BTC-USD&speed=10', transports: ['ws'], reconnect: false, sendSubscribe: false });
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    const ws = FakeWebSocket.last;
    expect(ws.url).toBe('ws://gw.test:8080/v1/replay?symbols=BTC-USD&speed=10');
    ws.open();
    expect(ws.sent).toHaveLength(0);
    ws.push(batch(trade('BTC-USD', 1), trade('ETH-USD', 1)));
    ws.drop(1000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(updates()).toHaveLength(1);
    expect(states.at(-1)?.label).toBe('closed');
  });
});

describe('epochs: resumes name the server run their sequences come from', () => {
  const tradeSnap = (symbol: string, seq: number, epoch?: number) => ({
    ...snapshot(symbol, 'trades', seq, { price: '1', size: '1', side: 'buy', trade_id: 1 }),
    ...(epoch === undefined ? {} : { epoch }),
  });

  it('sends the epoch of the last snapshot with since on every resume', async () => {
    const { client } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(tradeSnap('BTC-USD', 10, 1_796_401_165_372_073));
    FakeWebSocket.last.push(batch(trade('BTC-USD', 11)));
    expect(client.epochOf('trades', 'BTC-USD')).toBe(1_796_401_165_372_073);
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'], since: { 'BTC-USD': 11 }, epoch: 1_796_401_165_372_073 },
    ]);
    // And again on the next resume, from the same run.
    FakeWebSocket.last.push(batch(trade('BTC-USD', 12)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops[0]).toMatchObject({ since: { 'BTC-USD': 12 }, epoch: 1_796_401_165_372_073 });
  });

  it('adopts the new epoch of a live marker (a restarted server served the resume from its store)', async () => {
    const { client, events } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(tradeSnap('BTC-USD', 10, 111));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops[0]).toMatchObject({ since: { 'BTC-USD': 10 }, epoch: 111 });
    FakeWebSocket.last.push(batch(trade('BTC-USD', 11), trade('BTC-USD', 12)));
    FakeWebSocket.last.push({ type: 'live', symbol: 'BTC-USD', channel: 'trades', seq: 12, epoch: 222 });
    expect(events.at(-1)).toEqual({ kind: 'live', symbol: 'BTC-USD', channel: 'trades', seq: 12 });
    expect(client.epochOf('trades', 'BTC-USD')).toBe(222);
    FakeWebSocket.last.push(batch(trade('BTC-USD', 13)));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops[0]).toMatchObject({ since: { 'BTC-USD': 13 }, epoch: 222 });
  });

  it('an epoch_changed gap is a recovery: the fresh snapshot restarts the stream in the new epoch', async () => {
    const { client, events, updates } = setup();
    client.subscribe(['trades'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(tradeSnap('BTC-USD', 500, 111));
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    FakeWebSocket.last.push({ type: 'gap', symbol: 'BTC-USD', channel: 'trades', from_seq: 1, to_seq: 3, reason: 'epoch_changed' });
    FakeWebSocket.last.push(tradeSnap('BTC-USD', 3, 333));
    FakeWebSocket.last.push(batch(trade('BTC-USD', 4), trade('BTC-USD', 4), trade('BTC-USD', 5)));
    expect(updates().map((u) => u.seq)).toEqual([4, 5]);
    expect(events.filter((e) => e.kind === 'gap')).toHaveLength(1); // the server's, not a client-detected one too
    expect(client.seqOf('trades', 'BTC-USD')).toBe(5);
    expect(client.epochOf('trades', 'BTC-USD')).toBe(333);
  });

  it('starts a stream from a time with since_time, then resumes it by sequence', async () => {
    const { client, updates } = setup();
    client.startFrom('trades', 'BTC-USD', Date.UTC(2026, 11, 4, 16, 19));
    client.subscribe(['trades'], ['BTC-USD', 'ETH-USD']);
    client.start();
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['ETH-USD'] },
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'], since_time: '2026-12-04T16:19:00.000Z' },
    ]);
    FakeWebSocket.last.push(batch(trade('BTC-USD', 7), trade('BTC-USD', 8)));
    FakeWebSocket.last.push({ type: 'live', symbol: 'BTC-USD', channel: 'trades', seq: 8, epoch: 42 });
    FakeWebSocket.last.push(batch(trade('BTC-USD', 8), trade('BTC-USD', 9)));
    expect(updates().map((u) => u.seq)).toEqual([7, 8, 9]);
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD', 'ETH-USD'], since: { 'BTC-USD': 9 }, epoch: 42 },
    ]);
  });
});

describe('subscribeOps', () => {
  const st = (lastSeq: [string, number][], epochs: [string, number][] = [], startAt: [string, string][] = []) => ({
    lastSeq: new Map(lastSeq),
    epochs: new Map(epochs),
    startAt: new Map(startAt),
  });

  it('puts since and its epoch together; no epoch key when none is known', () => {
    expect(subscribeOps('trades', ['A', 'B'], st([['A', 5]], [['A', 9]]))).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['A', 'B'], since: { A: 5 }, epoch: 9 },
    ]);
    expect(subscribeOps('trades', ['A'], st([['A', 5]]))).toEqual([{ op: 'subscribe', channels: ['trades'], symbols: ['A'], since: { A: 5 } }]);
  });

  it('splits streams of different epochs into separate requests (one epoch per request)', () => {
    expect(subscribeOps('trades', ['A', 'B', 'C'], st([['A', 5], ['B', 6], ['C', 7]], [['A', 1], ['B', 2], ['C', 1]]))).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['A', 'C'], since: { A: 5, C: 7 }, epoch: 1 },
      { op: 'subscribe', channels: ['trades'], symbols: ['B'], since: { B: 6 }, epoch: 2 },
    ]);
  });

  it('never combines since_time with since; a sequence wins over a start time', () => {
    const ops = subscribeOps('trades', ['A', 'B', 'C'], st([['A', 5]], [['A', 1]], [['A', 'T0'], ['B', 'T1'], ['C', 'T1']]));
    expect(ops).toEqual([
      { op: 'subscribe', channels: ['trades'], symbols: ['A'], since: { A: 5 }, epoch: 1 },
      { op: 'subscribe', channels: ['trades'], symbols: ['B', 'C'], since_time: 'T1' },
    ]);
    for (const op of ops) expect('since' in op && 'since_time' in op).toBe(false);
  });

  it('without resume (a new subscription or a snapshot channel), nothing resumes', () => {
    expect(subscribeOps('quotes', ['A'], st([['A', 5]], [['A', 1]]), false)).toEqual([{ op: 'subscribe', channels: ['quotes'], symbols: ['A'] }]);
  });
});

describe('epochs of streams the server sends no epoch for', () => {
  it('a since_time start served from the ring (no snapshot, no live marker) takes the epoch of its connection', async () => {
    const { client } = setup();
    client.startFrom('trades', 'BTC-USD', 0);
    client.subscribe(['trades'], ['BTC-USD']);
    client.subscribe(['quotes'], ['BTC-USD']);
    client.start();
    FakeWebSocket.last.open();
    FakeWebSocket.last.push(batch(trade('BTC-USD', 7))); // before any epoch is known on this connection
    FakeWebSocket.last.push({ ...snapshot('BTC-USD', 'quotes', 3), epoch: 77 });
    expect(client.epochOf('trades', 'BTC-USD')).toBe(77);
    FakeWebSocket.last.drop();
    await vi.advanceTimersByTimeAsync(10_000);
    FakeWebSocket.last.open();
    expect(FakeWebSocket.last.ops[1]).toEqual({ op: 'subscribe', channels: ['trades'], symbols: ['BTC-USD'], since: { 'BTC-USD': 7 }, epoch: 77 });
  });
});
