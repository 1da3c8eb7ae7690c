// The Operator tab's figures from successive /v1/stats polls: the window,
// restarts, transport rates and latency quantiles from bucket deltas.
import { describe, expect, it } from 'vitest';
import type { ServerStats } from '../src/protocol';
import {
  LATENCY_WINDOW_MS,
  bucketDelta,
  fmtBytesPerS,
  fmtPerS,
  fmtQuantile,
  isRestart,
  legSummary,
  pushSample,
  quantile,
  sampleOf,
  transportRates,
  type StatsSample,
} from '../src/state/opstats';

// The server's buckets: 19 bounds, 20 counts (the last above 10 s).
const BOUNDS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000];
/** 20 counts, zero but for the given buckets. */
const buckets = (at: Record<number, number>): number[] => Array.from({ length: 20 }, (_, i) => at[i] ?? 0);

function stats(over: Partial<ServerStats> = {}): ServerStats {
  return { connections: 1, store_lag_ms: null, ...over };
}
/** A poll at `atMs` with ws counters and one leg's buckets. */
function poll(atMs: number, ws: { messages: number; bytes: number; connections?: number }, leg: Record<number, number>, uptimeS?: number): StatsSample {
  return sampleOf(
    stats({
      uptime_s: uptimeS,
      transports: { ws: { connections: ws.connections ?? 1, messages: ws.messages, bytes: ws.bytes } },
      latency: { bounds_us: BOUNDS, legs: { receive_to_write_ws: buckets(leg) } },
    }),
    atMs,
  );
}

describe('quantiles from bucket counts', () => {
  it('interpolates linearly within the bucket that holds the rank', () => {
    // 100 samples in (50, 100] µs: p50 at rank 50 is half way, p99 at 99%.
    expect(quantile(BOUNDS, buckets({ 3: 100 }), 0.5)).toEqual({ us: 75, edge: null });
    expect(quantile(BOUNDS, buckets({ 3: 100 }), 0.99)).toEqual({ us: 99.5, edge: null });
    // 90 in (100, 250], 10 in (1000, 2500]: p50 at rank 50 of 90 in the first, p99 at rank 99 → 9 of 10 in the second.
    expect(quantile(BOUNDS, buckets({ 4: 90, 7: 10 }), 0.5)).toEqual({ us: 100 + 150 * (50 / 90), edge: null });
    expect(quantile(BOUNDS, buckets({ 4: 90, 7: 10 }), 0.99)).toEqual({ us: 1000 + 1500 * 0.9, edge: null });
    // A rank exactly at a bucket's top stays in that bucket (its upper bound).
    expect(quantile(BOUNDS, buckets({ 4: 50, 7: 50 }), 0.5)).toEqual({ us: 250, edge: null });
  });

  it('says only "below the first bound" or "above the last" at the edges', () => {
    expect(quantile(BOUNDS, buckets({ 0: 7 }), 0.5)).toEqual({ us: 10, edge: 'below' });
    expect(quantile(BOUNDS, buckets({ 19: 3 }), 0.5)).toEqual({ us: 10_000_000, edge: 'above' });
    expect(quantile(BOUNDS, buckets({ 19: 3 }), 0.99)).toEqual({ us: 10_000_000, edge: 'above' });
    // 98 fast samples and 2 above 10 s: the p99 is above 10 s, the p50 below 10 µs.
    expect(quantile(BOUNDS, buckets({ 0: 98, 19: 2 }), 0.5)).toEqual({ us: 10, edge: 'below' });
    expect(quantile(BOUNDS, buckets({ 0: 98, 19: 2 }), 0.99)).toEqual({ us: 10_000_000, edge: 'above' });
    expect(fmtQuantile({ us: 10, edge: 'below' })).toBe('<10 µs');
    expect(fmtQuantile({ us: 10_000_000, edge: 'above' })).toBe('>10 s');
  });

  it('has no quantile without samples or with counts that do not match the buckets', () => {
    expect(quantile(BOUNDS, buckets({}), 0.5)).toBeNull();
    expect(quantile(BOUNDS, [1, 2, 3], 0.5)).toBeNull();
    expect(fmtQuantile(null)).toBe('no samples');
  });

  it('formats values by size', () => {
    expect([75, 99.5, 183.33, 2350, 12_345, 250_000, 2_500_000].map((us) => fmtQuantile({ us, edge: null }))).toEqual([
      '75 µs',
      '100 µs',
      '183 µs',
      '2.35 ms',
      '12.3 ms',
      '250 ms',
      '2.50 s',
    ]);
  });

  it('takes deltas only when no count went down', () => {
    expect(bucketDelta([1, 2, 3], [1, 5, 4])).toEqual([0, 3, 1]);
    expect(bucketDelta([1, 2, 3], [1, 1, 9])).toBeNull();
    expect(bucketDelta([1, 2], [1, 2, 3])).toBeNull();
  });
});

describe('the sliding window of polls', () => {
  it('keeps the last five minutes of polls', () => {
    let w: StatsSample[] = [];
    for (let t = 0; t <= 400_000; t += 2_000) w = pushSample(w, poll(t, { messages: t, bytes: t }, { 3: t }));
    expect(w[0].atMs).toBe(400_000 - LATENCY_WINDOW_MS);
    expect(w[w.length - 1].atMs).toBe(400_000);
    expect(w.length).toBe(151);
  });

  it('starts afresh when a counter goes down (the server restarted)', () => {
    let w = [poll(0, { messages: 1000, bytes: 9000 }, { 3: 500 })];
    w = pushSample(w, poll(2_000, { messages: 1200, bytes: 9900 }, { 3: 600 }));
    expect(w.length).toBe(2);
    // Restarted: fewer messages than before.
    const after = poll(4_000, { messages: 30, bytes: 400 }, { 3: 610 });
    expect(isRestart(w[1], after)).toBe(true);
    w = pushSample(w, after);
    expect(w).toEqual([after]);
    // Only bucket counts went down: also a restart.
    expect(isRestart(poll(0, { messages: 1, bytes: 1 }, { 3: 5, 4: 1 }), poll(2_000, { messages: 2, bytes: 2 }, { 3: 6 }))).toBe(true);
    // Uptime went down with counters that happen to be higher.
    expect(isRestart(poll(0, { messages: 1, bytes: 1 }, {}, 500), poll(2_000, { messages: 9, bytes: 9 }, {}, 3))).toBe(true);
    // Other buckets: another build.
    const a = sampleOf(stats({ latency: { bounds_us: [10, 20], legs: { x: [1, 1, 1] } } }), 0);
    const b = sampleOf(stats({ latency: { bounds_us: [10, 30], legs: { x: [1, 1, 1] } } }), 2_000);
    expect(isRestart(a, b)).toBe(true);
  });

  it('starts afresh if the browser clock goes back', () => {
    const w = [poll(10_000, { messages: 1, bytes: 1 }, {}), poll(12_000, { messages: 2, bytes: 2 }, {})];
    const s = poll(5_000, { messages: 3, bytes: 3 }, {});
    expect(pushSample(w, s)).toEqual([s]);
  });

  it('reads an older server (no transports, no latency) without failing', () => {
    const s = sampleOf(stats({ uptime_s: 5 }), 0);
    expect(s).toEqual({ atMs: 0, uptimeS: 5 });
    const w = pushSample([s], sampleOf(stats({ uptime_s: 7 }), 2_000));
    expect(transportRates(w)).toBeNull();
    expect(legSummary(w, 'receive_to_write_ws')).toBeNull();
  });

  it('leaves out malformed legs and transports', () => {
    const s = sampleOf(
      stats({
        transports: { ws: { connections: 1, messages: 2, bytes: 3 }, sse: { connections: 1 } as never },
        latency: { bounds_us: BOUNDS, legs: { good: buckets({}), short: [1, 2, 3], bad: buckets({ 2: -1 }) } },
      }),
      0,
    );
    expect(Object.keys(s.transports!)).toEqual(['ws']);
    expect(Object.keys(s.latency!.legs)).toEqual(['good']);
  });
});

describe('transport rates', () => {
  it('divides the last two polls’ deltas by the time between them', () => {
    let w = [poll(0, { messages: 1000, bytes: 50_000, connections: 2 }, {})];
    expect(transportRates(w)).toEqual({ ws: { connections: 2, subscriptions: null, messagesPerS: null, bytesPerS: null } });
    w = pushSample(w, poll(2_000, { messages: 1500, bytes: 90_000, connections: 3 }, {}));
    w = pushSample(w, poll(4_500, { messages: 2500, bytes: 140_000, connections: 3 }, {}));
    expect(transportRates(w)).toEqual({ ws: { connections: 3, subscriptions: null, messagesPerS: 400, bytesPerS: 20_000 } });
    // A server that counts subscriptions per transport: shown as they are now.
    const withSubs = pushSample(w, sampleOf({ ...stats(), uptime_s: 60, transports: { ws: { connections: 3, subscriptions: 12, messages: 3000, bytes: 150_000 } } }, 6_500));
    expect(transportRates(withSubs)?.ws.subscriptions).toBe(12);
  });

  it('has no rate right after a restart, never a negative one', () => {
    let w = [poll(0, { messages: 5000, bytes: 500_000 }, {})];
    w = pushSample(w, poll(2_000, { messages: 40, bytes: 4_000 }, {}));
    expect(transportRates(w)).toEqual({ ws: { connections: 1, subscriptions: null, messagesPerS: null, bytesPerS: null } });
    w = pushSample(w, poll(4_000, { messages: 240, bytes: 8_000 }, {}));
    expect(transportRates(w)).toEqual({ ws: { connections: 1, subscriptions: null, messagesPerS: 100, bytesPerS: 2_000 } });
  });

  it('formats rates', () => {
    expect([null, 0, 0.5, 10, 42.25, 400, 12_345, 2_500_000].map(fmtPerS)).toEqual(['—', '0', '0.5', '10', '42.3', '400', '12.3k', '2.50M']);
    expect([null, 0, 512, 9_600, 1_234_567, 2e9].map(fmtBytesPerS)).toEqual(['—', '0 B/s', '512 B/s', '9.6 kB/s', '1.23 MB/s', '2.00 GB/s']);
  });
});

describe('a latency leg over the window', () => {
  const LEG = 'receive_to_write_ws';

  it('computes p50/p99 from the oldest and newest poll, and one chart point per poll interval', () => {
    let w = [poll(0, { messages: 0, bytes: 0 }, { 3: 1000, 19: 5 })]; // before the window's start: not counted
    w = pushSample(w, poll(2_000, { messages: 0, bytes: 0 }, { 3: 1100, 19: 5 })); // +100 in (50, 100]
    w = pushSample(w, poll(4_000, { messages: 0, bytes: 0 }, { 3: 1100, 19: 5 })); // nothing
    w = pushSample(w, poll(6_000, { messages: 0, bytes: 0 }, { 3: 1100, 4: 100, 19: 5 })); // +100 in (100, 250]
    const s = legSummary(w, LEG)!;
    expect(s.samples).toBe(200);
    // 200 samples: rank 100 is the top of (50, 100]; rank 198 is 98 of 100 into (100, 250].
    expect(s.p50).toEqual({ us: 100, edge: null });
    expect(s.p99).toEqual({ us: 100 + 150 * 0.98, edge: null });
    expect(s.points).toEqual([
      { atMs: 2_000, p50: { us: 75, edge: null }, p99: { us: 99.5, edge: null } },
      { atMs: 4_000, p50: null, p99: null },
      { atMs: 6_000, p50: { us: 175, edge: null }, p99: { us: 248.5, edge: null } },
    ]);
  });

  it('has no samples with a single poll, or when nothing moved', () => {
    const one = [poll(0, { messages: 0, bytes: 0 }, { 3: 10 })];
    expect(legSummary(one, LEG)).toEqual({ samples: 0, p50: null, p99: null, points: [] });
    const still = pushSample(one, poll(2_000, { messages: 0, bytes: 0 }, { 3: 10 }));
    expect(legSummary(still, LEG)).toEqual({ samples: 0, p50: null, p99: null, points: [{ atMs: 2_000, p50: null, p99: null }] });
    expect(legSummary(still, 'no_such_leg')).toBeNull();
  });

  it('reads everything above 10 s as ">10 s"', () => {
    let w = [poll(0, { messages: 0, bytes: 0 }, {})];
    w = pushSample(w, poll(2_000, { messages: 0, bytes: 0 }, { 19: 4 }));
    const s = legSummary(w, LEG)!;
    expect([fmtQuantile(s.p50), fmtQuantile(s.p99)]).toEqual(['>10 s', '>10 s']);
  });

  it('counts only the new run after a restart, never a negative delta', () => {
    let w = [poll(0, { messages: 100, bytes: 100 }, { 5: 1_000_000 })];
    w = pushSample(w, poll(2_000, { messages: 200, bytes: 200 }, { 5: 1_000_100 }));
    // Restart: the counters begin again near zero.
    w = pushSample(w, poll(4_000, { messages: 10, bytes: 10 }, { 1: 10 }));
    expect(legSummary(w, LEG)).toEqual({ samples: 0, p50: null, p99: null, points: [] });
    w = pushSample(w, poll(6_000, { messages: 20, bytes: 20 }, { 1: 30 }));
    const s = legSummary(w, LEG)!;
    expect(s.samples).toBe(20);
    // 20 new samples in (10, 25]: p50 at rank 10 is half way.
    expect(s.p50).toEqual({ us: 17.5, edge: null });
  });
});
