// The pure rules behind issue 20: one clock, staleness, latency figures,
// and the store's replay behaviour.
import { describe, expect, it } from 'vitest';
import { clockResolutionMs, decimalsFor, fmtLatencyValue, latencyFigure } from '../src/state/latency';
import { feedIsDown, fmtAge, fmtAgeShort, staleness } from '../src/state/staleness';
import { MarketStore } from '../src/state/store';
import { fmtVolume } from '../src/util/format';
import { fmtAxisTick, fmtBarTime, fmtDateTime, fmtTime, parseDateTime, zoneLabel } from '../src/util/clock';

// 2026-12-04 14:05:09.007 UTC = 09:05:09.007 in New York (EST, UTC−5).
const T = Date.UTC(2026, 11, 4, 14, 5, 9, 7);

describe('clock', () => {
  it('formats in UTC whatever the browser zone', () => {
    expect(fmtTime(T, 'utc')).toBe('14:05:09.007');
    expect(fmtDateTime(T, 'utc')).toBe('2026-12-04 14:05:09');
    expect(zoneLabel('utc')).toBe('UTC');
  });

  it('formats in the local zone when asked (24-hour, never AM/PM)', () => {
    const d = new Date(T);
    const local = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}:09.007`;
    expect(fmtTime(T, 'local')).toBe(local);
    expect(fmtDateTime(T, 'local')).not.toMatch(/AM|PM/);
    expect(zoneLabel('local', T)).toMatch(/^UTC[+−]\d\d:\d\d$/);
  });

  it('reads back what it writes, in either zone; a bare time takes the given day', () => {
    for (const z of ['utc', 'local'] as const) {
      const whole = T - 7;
      expect(parseDateTime(fmtDateTime(whole, z), z)).toBe(whole);
      expect(parseDateTime(fmtTime(whole, z).slice(0, 8), z, T)).toBe(whole);
    }
    expect(parseDateTime('2026-12-04T14:05:09.5', 'utc')).toBe(T - 7 + 500);
    expect(parseDateTime('2026-02-31 10:00:00', 'utc')).toBeNull();
    expect(parseDateTime('14:05', 'utc')).toBeNull(); // no day to take it from
    expect(parseDateTime('12/04/2026 2:05 PM', 'utc')).toBeNull();
    expect(parseDateTime('2026-12-04 25:00:00', 'utc')).toBeNull();
  });

  it('puts dates on a daily axis, times on an intraday one', () => {
    const midnight = Date.UTC(2026, 11, 4) / 1000;
    // lightweight-charts TickMarkType.Time (3) on daily bars: a date, never "00:00:00".
    expect(fmtAxisTick(midnight, 3, 86_400, 'utc')).toBe('12-04');
    expect(fmtAxisTick(midnight, 2, 60, 'utc')).toBe('12-04');
    expect(fmtAxisTick(T / 1000, 3, 60, 'utc')).toBe('14:05');
    expect(fmtAxisTick(T / 1000, 4, 1, 'utc')).toBe('14:05:09');
    expect(fmtAxisTick(midnight, 0, 86_400, 'utc')).toBe('2026');
    expect(fmtBarTime(midnight, 86_400, 'utc')).toBe('2026-12-04');
    expect(fmtBarTime(T / 1000, 60, 'utc')).toBe('2026-12-04 14:05');
    expect(fmtBarTime(T / 1000, 1, 'utc')).toBe('2026-12-04 14:05:09');
  });
});

describe('volume column', () => {
  it('fits six characters', () => {
    expect(['7.34371', '550.152', '2663.53', '12345.6', '265.6', '1234567'].map(fmtVolume)).toEqual(['7.3437', '550.15', '2.66K', '12.3K', '265.6', '1.23M']);
  });
});

describe('staleness', () => {
  const now = 1_000_000;
  it('is fresh while the stream is up and data came since', () => {
    expect(staleness({ nowMs: now, lastDataMs: now - 300, streamUpSinceMs: now - 5_000 })).toEqual({ stale: false, ageMs: 300, reason: null });
  });
  it('marks data stale with its age while the stream is down', () => {
    expect(staleness({ nowMs: now, lastDataMs: now - 10_000, streamUpSinceMs: null })).toEqual({ stale: true, ageMs: 10_000, reason: 'stream down' });
  });
  it('stays stale after a reconnect until fresh data arrives', () => {
    expect(staleness({ nowMs: now, lastDataMs: now - 10_000, streamUpSinceMs: now - 500 }).reason).toBe('awaiting fresh data');
    expect(staleness({ nowMs: now, lastDataMs: now - 100, streamUpSinceMs: now - 500 }).stale).toBe(false);
  });
  it('marks a stale feed and an invalidated book', () => {
    expect(staleness({ nowMs: now, lastDataMs: now - 100, streamUpSinceMs: 0, feedDown: true }).reason).toBe('feed stale');
    expect(staleness({ nowMs: now, lastDataMs: now - 100, streamUpSinceMs: 0, invalidated: true }).reason).toBe('book invalidated');
  });
  it('has nothing to mark when nothing was ever shown', () => {
    expect(staleness({ nowMs: now, lastDataMs: undefined, streamUpSinceMs: null }).stale).toBe(false);
  });
  it('reads feed health', () => {
    expect(feedIsDown({ state: 'live', last_message_age_ms: 20 })).toBe(false);
    expect(feedIsDown({ state: 'reconnecting', last_message_age_ms: 20 })).toBe(true);
    expect(feedIsDown({ state: 'live', last_message_age_ms: 9_000 })).toBe(true);
  });
  it('formats ages', () => {
    expect(fmtAge(450)).toBe('0.4s');
    expect(fmtAge(12_300)).toBe('12s');
    expect(fmtAge(185_000)).toBe('3m 05s');
    expect(fmtAge(7_800_000)).toBe('2h 10m');
    expect([450, 12_300, 185_000, 7_800_000, 90_000_000].map(fmtAgeShort)).toEqual(['0.4s', '12s', '3m', '2h', '1d']);
  });
});

describe('latency figures', () => {
  const base = { offsetKnown: true, sinceLastSampleMs: 100, resolutionMs: 1 };
  it('shows whole milliseconds from a 1 ms clock, finer only from a finer one', () => {
    expect(decimalsFor(1)).toBe(0);
    expect(decimalsFor(0.1)).toBe(1);
    expect(decimalsFor(0.005)).toBe(3);
    expect(latencyFigure({ ...base, medianMs: 0.3 }).text).toBe('<1ms');
    expect(latencyFigure({ ...base, medianMs: 12.6 }).text).toBe('13ms');
    expect(fmtLatencyValue(0.34, 0.1)).toBe('0.3ms');
    expect(fmtLatencyValue(2_345, 1)).toBe('2.3s');
  });
  it('is never negative', () => {
    expect(latencyFigure({ ...base, medianMs: -0.3 }).text).toBe('<1ms');
    expect(latencyFigure({ ...base, medianMs: -40 }).text).toBe('<1ms');
    expect(fmtLatencyValue(-0.04, 0.1)).toBe('<0.1ms');
  });
  it('is withheld until the clock offset is known', () => {
    expect(latencyFigure({ ...base, offsetKnown: false, medianMs: 3 })).toMatchObject({ text: '—', state: 'pending' });
  });
  it('is marked stale when nothing has been drawn for a while', () => {
    expect(latencyFigure({ ...base, medianMs: 3, sinceLastSampleMs: 4_200 })).toMatchObject({ text: '3ms · 4s old', state: 'stale' });
    expect(latencyFigure({ ...base, medianMs: 3, streamUp: false })).toMatchObject({ text: '3ms · 0s old', state: 'stale' });
    expect(latencyFigure({ ...base, medianMs: 3, replay: true }).state).toBe('na');
  });
  it('measures the resolution of a clock', () => {
    let t = 0;
    expect(clockResolutionMs(() => (t += 0.25) - (t % 1))).toBe(1);
    let u = 0;
    expect(clockResolutionMs(() => (u += 0.1))).toBeCloseTo(0.1);
  });
  it('samples when drawn, not on arrival', () => {
    const st = new MarketStore();
    st.track('X');
    const sent = Date.now();
    st.apply({ kind: 'update', update: { symbol: 'X', channel: 'quotes', seq: 1, bid: '1', bid_size: '1', ask: '2', ask_size: '1', ts_event: sent * 1e6, ts_send: sent * 1e6 } });
    st.measureDrawn(sent + 40);
    expect(st.latencyEvent.median()).toBeCloseTo(40, 3);
    expect(st.lastSampleMs).toBe(sent + 40);
    // A stamp ahead of the (corrected) browser clock counts as zero, not negative.
    st.apply({ kind: 'update', update: { symbol: 'X', channel: 'quotes', seq: 2, bid: '1', bid_size: '1', ask: '2', ask_size: '1', ts_event: (sent + 100) * 1e6 } });
    st.measureDrawn(sent + 50);
    expect(Math.min(...[st.latencyEvent.median()!])).toBeGreaterThanOrEqual(0);
  });
});

describe('notices', () => {
  it('separate normal recoveries from faults', async () => {
    const { noticeKind } = await import('../src/state/store');
    const st = new MarketStore();
    st.apply({ kind: 'gap', symbol: 'X', channel: 'trades', from_seq: 1, to_seq: 4, reason: 'slow_consumer', origin: 'server' });
    st.apply({ kind: 'gap', symbol: 'X', channel: 'candles.1s', from_seq: 1, to_seq: 4, reason: 'history_exhausted', origin: 'server' });
    st.apply({ kind: 'gap', symbol: 'X', channel: 'trades', from_seq: 1, to_seq: 1, reason: 'sequence_reset', origin: 'client' });
    st.apply({ kind: 'error', code: 'bad_since', message: 'since 64 is ahead' });
    st.apply({ kind: 'error', code: 'unknown_symbol', message: 'no instrument' });
    expect(st.notices.map(noticeKind).reverse()).toEqual(['fault', 'recovery', 'recovery', 'recovery', 'fault']);
  });
});

describe('store in replay', () => {
  const trade = (symbol: string, seq: number, tsMs: number, price: string) => ({
    kind: 'update' as const,
    update: { symbol, channel: 'trades' as const, seq, price, size: '1', side: 'buy' as const, trade_id: seq, ts_event: tsMs * 1e6 },
  });
  const B = 1_700_000_100_000; // on a 5-minute boundary
  function replayStore() {
    const st = new MarketStore();
    st.replay = true;
    st.track('BTC-USD');
    st.track('AAPL');
    st.select('BTC-USD', '1m');
    st.apply({ kind: 'replay', status: { type: 'replay', state: 'playing', speed: '10', at: B * 1e6, from: B * 1e6, to: (B + 600_000) * 1e6 } });
    for (let i = 0; i < 10; i++) {
      st.apply(trade('BTC-USD', i + 1, B + i * 60_000, `${100 + i}`));
      st.apply(trade('AAPL', i + 1, B + i * 60_000 + 1, `${200 + i}`));
    }
    return st;
  }

  it('draws a symbol chosen mid-replay from the trades replayed so far', () => {
    const st = replayStore();
    st.select('AAPL');
    expect(st.tape.length).toBe(10);
    expect(st.tape[0].price).toBe('209');
    expect(st.candles.bars.length).toBe(10);
    expect(st.takeDirty().chartReset).toBe(true);
  });

  it('redraws an interval changed mid-replay instead of leaving an empty chart', () => {
    const st = replayStore();
    st.setInterval('5m');
    expect(st.candles.bars.map((b) => b.time)).toEqual([B / 1000, B / 1000 + 300]);
    st.setInterval('1s');
    expect(st.candles.bars.length).toBe(10);
  });

  it('follows the replay clock, forgets everything on a seek, and ends', () => {
    const st = replayStore();
    expect(st.replayInfo).toMatchObject({ state: 'playing', atMs: B + 540_001, toMs: B + 600_000 });
    st.clearReplayData();
    expect(st.tape.length).toBe(0);
    expect(st.symbols.get('AAPL')!.last).toBeUndefined();
    st.apply({ kind: 'replay_end', end: { type: 'end', events: 20, from: B * 1e6, to: (B + 600_000) * 1e6 } });
    expect(st.replayInfo).toMatchObject({ state: 'ended', events: 20, atMs: B + 600_000 });
  });
});
