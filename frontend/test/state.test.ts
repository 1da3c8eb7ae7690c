import { describe, expect, it, vi } from 'vitest';
import { OrderBook } from '../src/state/book';
import { CandleBuilder } from '../src/state/candles';
import { ClockOffset, RateMeter, RollingMedian } from '../src/state/metrics';
import { loadPrefs, savePrefs } from '../src/state/prefs';
import { MarketStore } from '../src/state/store';
import type { CandleChannel } from '../src/protocol';
import { addDec, subDec } from '../src/util/decimal';
import { FrameScheduler } from '../src/util/frame';

describe('decimal strings', () => {
  it('adds and subtracts exactly at the larger scale', () => {
    expect(addDec('0.1', '0.2')).toBe('0.3');
    expect(addDec('1.2000', '0.00001')).toBe('1.20001');
    expect(subDec('64123.50', '64200.00')).toBe('-76.50');
    expect(subDec('0.0003', '0.0010')).toBe('-0.0007');
    expect(addDec('99999999999999999.99', '0.01')).toBe('100000000000000000.00');
    expect(addDec('x', '1')).toBeNull();
  });
});

describe('OrderBook', () => {
  it('applies deltas, removes zero-size levels and sorts best first', () => {
    const b = new OrderBook();
    b.reset([['100.00', '1'], ['99.50', '2']], [['100.50', '3'], ['101.00', '1']], 10);
    b.apply([['99.50', '0'], ['100.25', '4']], [['100.5', '0.0000'], ['100.75', '1']], 11);
    expect(b.top(5)).toEqual({
      bids: [['100.25', '4'], ['100.00', '1']],
      asks: [['100.75', '1'], ['101.00', '1']],
    });
    expect(b.seq).toBe(11);
  });
});

describe('CandleBuilder', () => {
  it('buckets trades by interval and tracks OHLCV', () => {
    const c = new CandleBuilder(60_000);
    const t0 = 1_700_000_080_000; // 40 s into the minute starting at 1_700_000_040 s
    c.addTrade(10, 1, t0);
    c.addTrade(12, 1, t0 + 5_000);
    c.addTrade(9, 2, t0 + 10_000);
    c.addTrade(11, 1, t0 + 25_000); // next minute
    expect(c.bars).toEqual([
      { time: 1_700_000_040, open: 10, high: 12, low: 9, close: 9, volume: 4 },
      { time: 1_700_000_100, open: 11, high: 11, low: 11, close: 11, volume: 1 },
    ]);
    expect(c.addTrade(5, 1, t0)).toBeNull(); // older than the last bar
  });

  it('applies live candles: same bucket replaces, newer appends, older updates in place', () => {
    const c = new CandleBuilder(1_000);
    const k = (start: number, close: string, closed = false) => ({ start: start * 1e9, open: '1', high: '9', low: '0.5', close, volume: '2', trades: 3, closed });
    expect(c.applyCandle(k(10, '2'))).toMatchObject({ historical: false, bar: { time: 10, close: 2 } });
    expect(c.applyCandle(k(10, '3'))).toMatchObject({ historical: false, bar: { time: 10, close: 3 } });
    expect(c.applyCandle(k(12, '4'))).toMatchObject({ historical: false, bar: { time: 12 } });
    expect(c.applyCandle(k(10, '5', true))).toMatchObject({ historical: true, bar: { time: 10, close: 5 } });
    expect(c.applyCandle(k(11, '6', true))).toMatchObject({ historical: true, bar: { time: 11 } });
    expect(c.bars.map((b) => [b.time, b.close])).toEqual([[10, 5], [11, 6], [12, 4]]);
    expect(c.bars[0]).toEqual({ time: 10, open: 1, high: 9, low: 0.5, close: 5, volume: 2 });
    expect(c.applyCandle({ ...k(13, 'x') })).toBeNull();
  });

  it('merges history under live candles that arrived while it loaded (live wins from its first bucket on)', () => {
    const c = new CandleBuilder(1_000);
    c.applyCandle({ start: 9e9, open: '2', high: '4', low: '2', close: '4', volume: '5', trades: 9, closed: false });
    c.setHistory(
      [
        { t: 8_000_000_000, open: '1', high: '2', low: '1', close: '2', volume: '3' },
        { t: 9_000_000_000, open: '2', high: '3', low: '2', close: '3', volume: '1' }, // trails the live value
      ],
      9_900,
    );
    expect(c.bars).toEqual([
      { time: 8, open: 1, high: 2, low: 1, close: 2, volume: 3 },
      { time: 9, open: 2, high: 4, low: 2, close: 4, volume: 5 },
    ]);
  });

  it('merges history with bars built while it loaded and skips trades already in history', () => {
    const c = new CandleBuilder(1_000);
    c.addTrade(5, 1, 10_500);
    c.setHistory(
      [
        { t: 8_000_000_000, open: '1', high: '2', low: '1', close: '2', volume: '3' },
        { t: 9_000_000_000, open: '2', high: '3', low: '2', close: '3', volume: '1' },
      ],
      9_900,
    );
    expect(c.bars.map((b) => b.time)).toEqual([8, 9, 10]);
    expect(c.addTrade(7, 1, 9_800)).toBeNull();
  });
});

describe('metrics', () => {
  it('rolling median over the window', () => {
    const m = new RollingMedian(3);
    expect(m.median()).toBeNull();
    [5, 1, 3].forEach((v) => m.add(v));
    expect(m.median()).toBe(3);
    m.add(100);
    m.add(100); // window now 3,100,100
    expect(m.median()).toBe(100);
  });

  it('rate over the last second', () => {
    let now = 1_000;
    const r = new RateMeter(() => now);
    for (let i = 0; i < 10; i++) {
      r.add();
      now += 100;
    }
    expect(r.perSecond()).toBeGreaterThanOrEqual(7);
    now += 2_000;
    expect(r.perSecond()).toBe(0);
  });
});

describe('prefs', () => {
  it('round-trips and survives garbage', () => {
    const mem = new Map<string, string>();
    const storage = { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v) };
    expect(loadPrefs(storage)).toEqual({ watchlist: null, selected: null, interval: '1m', clock: 'utc' });
    savePrefs({ watchlist: ['AAPL', 'BTC-USD'], selected: 'AAPL', interval: '5m', clock: 'local' }, storage);
    expect(loadPrefs(storage)).toEqual({ watchlist: ['AAPL', 'BTC-USD'], selected: 'AAPL', interval: '5m', clock: 'local' });
    mem.set('tickwire.prefs.v1', '{"clock":"mars"}');
    expect(loadPrefs(storage).clock).toBe('utc');
    mem.set('tickwire.prefs.v1', '{not json');
    expect(loadPrefs(storage).watchlist).toBeNull();
  });
});

describe('FrameScheduler', () => {
  it('coalesces many requests into one render per frame', () => {
    const frames: (() => void)[] = [];
    const render = vi.fn();
    const s = new FrameScheduler(render, (cb) => frames.push(cb));
    for (let i = 0; i < 1000; i++) s.request();
    expect(frames).toHaveLength(1);
    frames.shift()!();
    expect(render).toHaveBeenCalledTimes(1);
    s.request();
    expect(frames).toHaveLength(1);
  });
});

describe('MarketStore', () => {
  const clocks = { ts_event: Date.now() * 1e6, ts_recv: Date.now() * 1e6, ts_send: Date.now() * 1e6 };
  const candleData = (start: number, price: string, closed: boolean) => ({ start, open: price, high: price, low: price, close: price, volume: '1', trades: 1, closed });
  const candle = (symbol: string, channel: CandleChannel, seq: number, start: number, price: string, closed: boolean) => ({
    symbol,
    channel,
    seq,
    ...clocks,
    ...candleData(start, price, closed),
  });

  it('adds trade sizes to REST volume exactly, skipping trades the stats already counted', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    st.applyRestSnapshot([
      { symbol: 'BTC-USD', quote: null, last_trade: { seq: 5, price: '100.00', size: '1', side: 'buy', trade_id: 5, ts_event: 0 }, stats: { open: '90.00', high: '1', low: '1', volume: '10.1', trades: 5 } },
    ]);
    for (const seq of [5, 6, 7]) {
      st.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'trades', seq, price: '101.00', size: '0.2', side: 'sell', trade_id: seq, ...clocks } });
    }
    const s = st.symbols.get('BTC-USD')!;
    expect(s.volume).toBe('10.5');
    expect(s.last).toBe('101.00');
    expect(s.open).toBe('90.00');
  });

  it('starts volume and open from the first trade when the server has no stats yet', () => {
    const st = new MarketStore();
    st.track('SOL-USD');
    st.applyRestSnapshot([{ symbol: 'SOL-USD', quote: null, last_trade: null, stats: null }]);
    st.apply({ kind: 'update', update: { symbol: 'SOL-USD', channel: 'trades', seq: 1, price: '150.01', size: '2.5', side: 'buy', trade_id: 1, ...clocks } });
    st.apply({ kind: 'update', update: { symbol: 'SOL-USD', channel: 'trades', seq: 2, price: '150.05', size: '0.5', side: 'buy', trade_id: 2, ...clocks } });
    expect(st.symbols.get('SOL-USD')).toMatchObject({ open: '150.01', volume: '3.0', last: '150.05' });
  });

  it('marks changes dirty once and hands them over per frame', () => {
    const onDirty = vi.fn();
    const st = new MarketStore(onDirty);
    st.track('ETH-USD');
    st.select('ETH-USD');
    st.takeDirty();
    for (let i = 1; i <= 100; i++) {
      st.apply({ kind: 'update', update: { symbol: 'ETH-USD', channel: 'quotes', seq: i, bid: `${i}.00`, bid_size: '1', ask: `${i}.01`, ask_size: '1', ...clocks } });
      st.apply({ kind: 'update', update: { symbol: 'ETH-USD', channel: 'trades', seq: i, price: `${i}.00`, size: '1', side: 'buy', trade_id: i, ...clocks } });
      st.apply({ kind: 'update', update: candle('ETH-USD', 'candles.1m', i, 60_000_000_000, `${i}.00`, false) });
    }
    const d = st.takeDirty();
    expect(d.symbols).toEqual(['ETH-USD']);
    expect(d.tape).toBe(true);
    expect(d.bars).toEqual([{ time: 60, open: 100, high: 100, low: 100, close: 100, volume: 1 }]);
    expect(st.symbols.get('ETH-USD')!.bid).toBe('100.00');
    expect(st.tape[0].price).toBe('100.00');
    // Latency is sampled when the frame draws the updates, not on arrival.
    expect(st.latencyEvent.median()).toBeNull();
    st.measureDrawn();
    expect(st.latencyEvent.median()).not.toBeNull();
    expect(st.takeDirty().symbols).toEqual([]);
  });

  it('seeds an empty tape from the trades snapshot, but only once; trades build bars only in replay', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    st.select('BTC-USD');
    const snap = { type: 'snapshot' as const, symbol: 'BTC-USD', channel: 'trades' as const, seq: 3, data: { price: '64000.00', size: '0.1', side: 'buy' as const, trade_id: 7 }, ...clocks };
    st.apply({ kind: 'snapshot', msg: snap });
    st.apply({ kind: 'snapshot', msg: snap });
    expect(st.tape.map((t) => t.tradeId)).toEqual([7]);
    // Live bars come from the candle channel, not from trades.
    expect(st.candles.bars).toHaveLength(0);
    st.replay = true;
    st.select('BTC-USD');
    st.apply({ kind: 'snapshot', msg: snap });
    expect(st.candles.bars).toHaveLength(1);
  });

  it('draws the selected symbol\'s live candles at the selected interval: updates the last bar, appends new ones', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    st.track('ETH-USD');
    st.select('BTC-USD', '1s');
    st.takeDirty();
    const T = 1_700_000_000_000_000_000;
    // The subscription's snapshot is the candle so far.
    st.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'BTC-USD', channel: 'candles.1s', seq: 5, data: candleData(T, '10.00', false), ...clocks } });
    expect(st.candles.bars).toEqual([{ time: 1_700_000_000, open: 10, high: 10, low: 10, close: 10, volume: 1 }]);
    let d = st.takeDirty();
    expect(d.bars.map((b) => b.time)).toEqual([1_700_000_000]);
    // The same bucket again: the last bar takes the server's value.
    st.apply({ kind: 'update', update: { ...candle('BTC-USD', 'candles.1s', 6, T, '12.50', false), open: '10.00', high: '13.00', low: '9.00', volume: '4.5' } });
    expect(st.candles.bars).toEqual([{ time: 1_700_000_000, open: 10, high: 13, low: 9, close: 12.5, volume: 4.5 }]);
    // Other symbols, other intervals and trades leave the bars alone.
    st.apply({ kind: 'update', update: candle('ETH-USD', 'candles.1s', 1, T, '99.00', false) });
    st.apply({ kind: 'update', update: candle('BTC-USD', 'candles.1m', 1, T, '99.00', false) });
    st.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'trades', seq: 1, price: '99.00', size: '1', side: 'buy', trade_id: 1, ...clocks } });
    expect(st.candles.bars).toHaveLength(1);
    expect(st.candles.bars[0].close).toBe(12.5);
    // Its closed value, then the next bucket: appended.
    st.apply({ kind: 'update', update: { ...candle('BTC-USD', 'candles.1s', 7, T, '12.00', true), open: '10.00' } });
    st.apply({ kind: 'update', update: candle('BTC-USD', 'candles.1s', 8, T + 1e9, '11.00', false) });
    expect(st.candles.bars.map((b) => [b.time, b.close])).toEqual([[1_700_000_000, 12], [1_700_000_001, 11]]);
    expect(st.lastCandle).toMatchObject({ start: T + 1e9, close: '11.00' });
    d = st.takeDirty();
    expect(d.chartReset).toBe(false);
    expect(d.bars.map((b) => b.time)).toEqual([1_700_000_000, 1_700_000_001]);
    // A late final value of an older bucket redraws the chart.
    st.apply({ kind: 'update', update: candle('BTC-USD', 'candles.1s', 9, T, '12.25', true) });
    expect(st.candles.bars[0].close).toBe(12.25);
    expect(st.takeDirty().chartReset).toBe(true);
    // Switching the interval starts empty and ignores the old interval's stragglers.
    st.setInterval('1m');
    st.apply({ kind: 'update', update: candle('BTC-USD', 'candles.1s', 10, T + 2e9, '1.00', false) });
    expect(st.candles.bars).toHaveLength(0);
    expect(st.candleChannel).toBe('candles.1m');
  });

  it('keeps the book only for the selected symbol; on reset keeps its last levels, marked stale, until a snapshot', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    st.select('BTC-USD');
    st.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'BTC-USD', channel: 'book', seq: 1, data: { bids: [['1', '1']], asks: [['2', '1']] }, ...clocks } });
    st.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'book', seq: 2, bids: [['1.5', '2']], asks: [], ...clocks } });
    expect(st.book.top(5).bids[0]).toEqual(['1.5', '2']);
    st.setStreamUp(true, Date.now() - 10_000);
    expect(st.bookStaleness().stale).toBe(false);
    st.apply({ kind: 'book_reset', symbol: 'BTC-USD', reason: 'invalidated by server' });
    expect(st.book.empty).toBe(false);
    expect(st.bookStatus).toBe('resync');
    expect(st.bookStaleness()).toMatchObject({ stale: true, reason: 'book invalidated' });
    // A delta before the new snapshot is not applied to the invalid book.
    st.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'book', seq: 3, bids: [['1.7', '2']], asks: [], ...clocks } });
    expect(st.book.top(5).bids[0]).toEqual(['1.5', '2']);
    st.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'BTC-USD', channel: 'book', seq: 9, data: { bids: [['1', '1']], asks: [] }, ...clocks } });
    expect(st.bookStaleness().stale).toBe(false);
    expect(st.notices.map((n) => n.level)).toEqual(['ok', 'info']);
  });

  it('in replay keeps every replayed symbol\'s book, so a symbol chosen mid-replay shows its book at once', () => {
    const st = new MarketStore();
    for (const s of ['BTC-USD', 'ETH-USD', 'SOL-USD']) st.track(s);
    st.replay = true;
    st.select('BTC-USD');
    const book = (symbol: string, seq: number, bid: string) => ({ kind: 'snapshot' as const, msg: { type: 'snapshot' as const, symbol, channel: 'book' as const, seq, epoch: 0, data: { bids: [[bid, '1']] as [string, string][], asks: [] }, ...clocks } });
    const delta = (symbol: string, seq: number, bid: string) => ({ kind: 'update' as const, update: { symbol, channel: 'book' as const, seq, bids: [[bid, '2']] as [string, string][], asks: [], ...clocks } });
    // The replay's first frame: each symbol's book (or none stored), then deltas.
    st.apply(book('BTC-USD', 10, '100'));
    st.apply(book('ETH-USD', 20, '50'));
    st.apply({ kind: 'book_reset', symbol: 'SOL-USD', reason: 'invalidated by server' });
    st.apply(delta('ETH-USD', 21, '51'));
    st.apply(delta('BTC-USD', 11, '101'));
    st.takeDirty();
    expect(st.book.seq).toBe(11);
    // Only the shown book's changes ask for a redraw.
    st.apply(delta('ETH-USD', 22, '52'));
    expect(st.takeDirty().book).toBe(false);

    st.select('ETH-USD');
    expect(st.bookStatus).toBe('live');
    expect(st.book.seq).toBe(22);
    expect(st.book.top(5).bids.map((l) => l[0])).toEqual(['52', '51', '50']);
    expect(st.takeDirty().book).toBe(true);
    // BTC-USD went on meanwhile; selected again, it is where the replay is.
    st.apply(delta('BTC-USD', 12, '102'));
    st.select('BTC-USD');
    expect(st.book.seq).toBe(12);
    expect(st.book.top(1).bids[0][0]).toBe('102');
    // No stored book: "resyncing" until the replay reaches a reset, with no notice for a symbol not shown.
    st.select('SOL-USD');
    expect(st.bookStatus).toBe('resync');
    expect(st.notices).toHaveLength(0);
    st.apply(book('SOL-USD', 5, '20'));
    expect(st.bookStatus).toBe('live');
    // A seek forgets every replayed book; the seek's snapshots bring them back.
    st.clearReplayData();
    expect(st.book.empty).toBe(true);
    expect(st.bookStatus).toBe('waiting');
    st.select('ETH-USD');
    expect(st.book.empty).toBe(true);
  });

  it('live keeps only the selected symbol\'s book, and a new selection starts empty', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    st.track('ETH-USD');
    st.select('BTC-USD');
    st.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'ETH-USD', channel: 'book', seq: 1, data: { bids: [['1', '1']], asks: [] }, ...clocks } });
    expect(st.book.empty).toBe(true);
    st.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'BTC-USD', channel: 'book', seq: 1, data: { bids: [['1', '1']], asks: [] }, ...clocks } });
    st.select('ETH-USD');
    expect(st.book.empty).toBe(true);
    expect(st.bookStatus).toBe('waiting');
  });
});

describe('ClockOffset', () => {
  it('takes the offset of the shortest round trip among the recent ones', () => {
    const c = new ClockOffset(3);
    expect(c.valueMs).toBe(0);
    expect(c.uncertaintyMs).toBeNull();
    c.add(40, -480);
    c.add(4, -501);
    c.add(90, -430);
    // The smallest correction the best sample allows: -501 ms, give or take 2.
    expect(c.valueMs).toBe(-499);
    expect(c.uncertaintyMs).toBe(2);
    c.add(20, -495); // the 4 ms sample is still among the last three
    expect(c.valueMs).toBe(-499);
    c.add(30, -490); // now it is not: -495 ms, give or take 10
    expect(c.valueMs).toBe(-485);
    c.add(NaN, 0);
    c.add(-1, 0);
    expect(c.valueMs).toBe(-485);
  });

  it('leaves agreeing clocks alone, however late the pong is read', () => {
    const c = new ClockOffset();
    // Same clock: a pong stamped 1 ms after its ping, read 11 ms after it.
    c.add(11, 1 - 11 / 2);
    expect(c.valueMs).toBe(0);
    c.add(30, 14);
    expect(c.valueMs).toBe(0);
  });

  it('corrects the latency figures for a browser clock that is ahead of the server', () => {
    const st = new MarketStore();
    st.track('BTC-USD');
    // The browser runs 500 ms ahead: the server's "now" is Date.now() - 500.
    st.apply({ kind: 'pong', id: 1, rttMs: 2, clockOffsetMs: -500 });
    const serverNowNs = (Date.now() - 500) * 1e6;
    const clocks = { ts_event: serverNowNs, ts_recv: serverNowNs, ts_send: serverNowNs };
    st.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'trades', seq: 1, price: '1.00', size: '1', side: 'buy', trade_id: 1, ...clocks } });
    st.measureDrawn();
    expect(Math.abs(st.latencyEvent.median()!)).toBeLessThan(50);
    expect(Math.abs(st.latencySend.median()!)).toBeLessThan(50);
  });
});

describe('chart fill after a page load (trades from since_time)', () => {
  const M = 60_000;
  const hist = (t: number, close: string, volume = '1') => ({ t: t * 1e6, open: '10', high: '12', low: '9', close, volume });

  it('rebuilds the buckets from the last history candle on, until the candle channel takes over', () => {
    const c = new CandleBuilder(M);
    c.setHistory([hist(0, '11'), hist(M, '11', '0.5')], 2 * M - 1);
    c.fillFrom(M);
    // A trade before the start is inside history already.
    expect(c.fillTrade(99, 1, M - 1)).toBeNull();
    // The last history bucket is rebuilt from its trades (REST saw only part of it).
    expect(c.fillTrade(20, 1, M + 10)).toMatchObject({ bar: { time: 60, open: 20, high: 20, low: 20, close: 20, volume: 1 }, historical: false });
    c.fillTrade(22, 2, M + 20);
    expect(c.bars[1]).toMatchObject({ open: 20, high: 22, close: 22, volume: 3 });
    // A bucket that closed before the live stream began is added from its trades.
    c.fillTrade(21, 1, 2 * M + 5);
    expect(c.bars.map((b) => b.time)).toEqual([0, 60, 120]);
    // The live candle of the open bucket wins over what trades built there, and owns later buckets.
    c.applyCandle({ start: 120e9, open: '21', high: '25', low: '20', close: '24', volume: '4', trades: 3, closed: false });
    expect(c.fillTrade(30, 1, 2 * M + 30)).toBeNull();
    expect(c.fillTrade(30, 1, 3 * M)).toBeNull();
    expect(c.bars[2]).toMatchObject({ close: 24, volume: 4 });
    // A late stored trade of an older bucket still lands there (a redraw).
    expect(c.fillTrade(19, 1, M + 50)).toMatchObject({ bar: { time: 60, low: 19, close: 19, volume: 4 }, historical: true });
  });

  it('without fillFrom, live trades never touch the bars (they come from the candle channel)', () => {
    const c = new CandleBuilder(M);
    c.setHistory([hist(0, '11')], M);
    expect(c.fillTrade(20, 1, M + 10)).toBeNull();
    expect(c.bars).toHaveLength(1);
  });

  it('the store puts filled trades on the tape (with their seq) and on the chart', () => {
    const store = new MarketStore();
    store.setInstruments([{ symbol: 'BTC-USD' }]);
    store.track('BTC-USD');
    store.select('BTC-USD', '1m');
    store.candles.setHistory([hist(0, '11')], M);
    store.candles.fillFrom(0);
    store.takeDirty();
    const t = (seq: number, ms: number, price: string) =>
      ({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'trades', seq, price, size: '1', side: 'buy', trade_id: seq, ts_event: ms * 1e6 } }) as const;
    store.apply(t(7, 10, '20'));
    store.apply(t(8, M + 10, '21'));
    expect(store.tape.map((r) => r.seq)).toEqual([8, 7]);
    expect(store.candles.bars).toMatchObject([{ time: 0, open: 20, volume: 1 }, { time: 60, open: 21 }]);
    expect(store.takeDirty().bars.map((b) => b.time)).toEqual([0, 60]);
  });

  it('an epoch_changed gap is a recovery notice, a lost trade a fault', () => {
    const store = new MarketStore();
    store.apply({ kind: 'gap', symbol: 'BTC-USD', channel: 'trades', from_seq: 1, to_seq: 3, reason: 'epoch_changed', origin: 'server' });
    store.apply({ kind: 'gap', symbol: 'BTC-USD', channel: 'trades', from_seq: 4, to_seq: 5, reason: 'slow_consumer', origin: 'server' });
    expect(store.notices.map((n) => n.level)).toEqual(['warn', 'ok']);
  });
});
