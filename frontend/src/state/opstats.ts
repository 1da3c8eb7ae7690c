// The Operator tab's figures that need more than one /v1/stats poll: per
// transport rates, and p50/p99 per latency leg over a sliding window. The
// server sends only counters cumulative since it started; everything here is a
// difference between polls.
//
// - Window: the polls of the last LATENCY_WINDOW_MS (5 min) of this browser's
//   clock, kept only while the Operator tab polls (every 2 s while shown).
// - Restart: if any counter goes down (or uptime does, or the buckets change)
//   the server restarted: the window starts afresh from that poll, so no
//   delta is ever negative and nothing from the old run is mixed in.
// - Quantiles: from the difference of bucket counts between the oldest and
//   newest poll of the window, interpolated linearly within the bucket that
//   holds the rank (as Prometheus' histogram_quantile does). A rank in the
//   first bucket reads "<10 µs" and one in the last (+Inf) ">10 s": nothing is
//   known inside them.
// - Chart: one point per poll, each from the delta since the previous poll (a
//   point covers one poll interval, ~2 s); an interval with no samples is a
//   gap in the line.

import type { ServerStats } from '../protocol';

export const LATENCY_WINDOW_MS = 5 * 60_000;

/** The legs the server measures, in the order shown. */
export const LATENCY_LEGS = ['exchange_to_receive', 'receive_to_send', 'receive_to_write_ws', 'receive_to_write_sse', 'receive_to_write_poll'] as const;
export const TRANSPORTS = ['ws', 'sse', 'poll', 'replay'] as const;

export interface TransportCounters {
  connections: number;
  /** Subscriptions held on this transport now (absent from older servers). */
  subscriptions?: number;
  /** Updates written to clients since the server started. */
  messages: number;
  /** Bytes handed to sockets since the server started. */
  bytes: number;
}

export interface Histograms {
  /** Upper bounds of every bucket but the last, µs, increasing. */
  boundsUs: number[];
  /** Per leg, one count per bucket (bounds + 1), each cumulative since start. */
  legs: Record<string, number[]>;
}

/** One /v1/stats poll, reduced to what the window needs. */
export interface StatsSample {
  /** When the poll's answer arrived (this browser's clock). */
  atMs: number;
  uptimeS?: number;
  transports?: Record<string, TransportCounters>;
  latency?: Histograms;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** The parts of a /v1/stats answer the window uses; anything malformed (or absent: an older server) is left out. */
export function sampleOf(stats: ServerStats, atMs: number): StatsSample {
  const s: StatsSample = { atMs };
  if (isCount(stats.uptime_s)) s.uptimeS = stats.uptime_s;
  if (stats.transports && typeof stats.transports === 'object') {
    const t: Record<string, TransportCounters> = {};
    for (const [name, c] of Object.entries(stats.transports)) {
      if (c && isCount(c.connections) && isCount(c.messages) && isCount(c.bytes)) {
        t[name] = { connections: c.connections, messages: c.messages, bytes: c.bytes };
        if (isCount(c.subscriptions)) t[name].subscriptions = c.subscriptions;
      }
    }
    s.transports = t;
  }
  const lat = stats.latency;
  if (lat && Array.isArray(lat.bounds_us) && lat.bounds_us.length > 0 && lat.bounds_us.every(isCount) && lat.legs && typeof lat.legs === 'object') {
    const legs: Record<string, number[]> = {};
    for (const [name, counts] of Object.entries(lat.legs)) {
      if (Array.isArray(counts) && counts.length === lat.bounds_us.length + 1 && counts.every(isCount)) legs[name] = counts.slice();
    }
    s.latency = { boundsUs: lat.bounds_us.slice(), legs };
  }
  return s;
}

/** `next` comes from another server run than `prev`: a counter, or uptime, went down, or the buckets changed. */
export function isRestart(prev: StatsSample, next: StatsSample): boolean {
  if (prev.uptimeS !== undefined && next.uptimeS !== undefined && next.uptimeS < prev.uptimeS) return true;
  for (const [name, a] of Object.entries(prev.transports ?? {})) {
    const b = next.transports?.[name];
    if (b && (b.messages < a.messages || b.bytes < a.bytes)) return true;
  }
  if (prev.latency && next.latency) {
    const [pa, pb] = [prev.latency.boundsUs, next.latency.boundsUs];
    if (pa.length !== pb.length || pa.some((v, i) => v !== pb[i])) return true;
    for (const [leg, a] of Object.entries(prev.latency.legs)) {
      const b = next.latency.legs[leg];
      if (b && b.some((v, i) => v < a[i])) return true;
    }
  }
  return false;
}

/**
 * The window after a new poll: `s` appended and polls older than `spanMs`
 * before it dropped; `s` alone after a restart (or a clock that went back).
 */
export function pushSample(window: readonly StatsSample[], s: StatsSample, spanMs = LATENCY_WINDOW_MS): StatsSample[] {
  const last = window[window.length - 1];
  if (!last || s.atMs < last.atMs || isRestart(last, s)) return [s];
  return [...window.filter((w) => w.atMs >= s.atMs - spanMs), s];
}

export interface TransportRate {
  connections: number;
  subscriptions: number | null;
  /** null until two polls of the same server run are known. */
  messagesPerS: number | null;
  bytesPerS: number | null;
}

/** Per transport: connections now, and messages and bytes a second between the last two polls. */
export function transportRates(window: readonly StatsSample[]): Record<string, TransportRate> | null {
  const next = window[window.length - 1];
  if (!next?.transports) return null;
  const prev = window.length >= 2 ? window[window.length - 2] : undefined;
  const dtS = prev ? (next.atMs - prev.atMs) / 1_000 : 0;
  const out: Record<string, TransportRate> = {};
  for (const [name, c] of Object.entries(next.transports)) {
    const p = prev?.transports?.[name];
    const ok = p !== undefined && dtS > 0;
    out[name] = {
      connections: c.connections,
      subscriptions: c.subscriptions ?? null,
      messagesPerS: ok ? (c.messages - p.messages) / dtS : null,
      bytesPerS: ok ? (c.bytes - p.bytes) / dtS : null,
    };
  }
  return out;
}

/** Bucket counts added between two polls; null if a count went down (not the same run). */
export function bucketDelta(older: readonly number[], newer: readonly number[]): number[] | null {
  if (older.length !== newer.length) return null;
  const d = newer.map((v, i) => v - older[i]);
  return d.some((v) => v < 0) ? null : d;
}

export interface Quantile {
  /** The value, µs: interpolated within its bucket; the bucket's edge when `edge` is set. */
  us: number;
  /** 'below': in the first bucket (under bounds[0]); 'above': in the last (over the last bound). */
  edge: 'below' | 'above' | null;
}

/** The q-quantile (0 < q ≤ 1) of the samples counted in `counts` (one per bucket); null with no samples. */
export function quantile(boundsUs: readonly number[], counts: readonly number[], q: number): Quantile | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!(total > 0) || counts.length !== boundsUs.length + 1) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c > 0 && below + c >= rank) {
      if (i === 0) return { us: boundsUs[0], edge: 'below' };
      if (i === counts.length - 1) return { us: boundsUs[boundsUs.length - 1], edge: 'above' };
      const lo = boundsUs[i - 1];
      const hi = boundsUs[i];
      return { us: lo + (hi - lo) * ((rank - below) / c), edge: null };
    }
    below += c;
  }
  return null;
}

export interface LegPoint {
  atMs: number;
  p50: Quantile | null;
  p99: Quantile | null;
}

export interface LegSummary {
  /** Samples counted in the window (newest minus oldest poll). */
  samples: number;
  p50: Quantile | null;
  p99: Quantile | null;
  /** One per poll after the first, from the delta since the poll before. */
  points: LegPoint[];
}

/** p50/p99 of one leg over the window, and its chart points; null if the server sends no such leg. */
export function legSummary(window: readonly StatsSample[], leg: string): LegSummary | null {
  const newest = window[window.length - 1];
  const bounds = newest?.latency?.boundsUs;
  if (!bounds || !newest.latency!.legs[leg]) return null;
  // Polls in the window all come from one run with the same buckets (pushSample);
  // the oldest that has this leg is the baseline.
  const withLeg = window.filter((s) => s.latency?.legs[leg]);
  const points: LegPoint[] = [];
  for (let i = 1; i < withLeg.length; i++) {
    const d = bucketDelta(withLeg[i - 1].latency!.legs[leg], withLeg[i].latency!.legs[leg]);
    points.push({ atMs: withLeg[i].atMs, p50: d && quantile(bounds, d, 0.5), p99: d && quantile(bounds, d, 0.99) });
  }
  const d = withLeg.length >= 2 ? bucketDelta(withLeg[0].latency!.legs[leg], newest.latency!.legs[leg]) : null;
  return {
    samples: d ? d.reduce((a, b) => a + b, 0) : 0,
    p50: d && quantile(bounds, d, 0.5),
    p99: d && quantile(bounds, d, 0.99),
    points,
  };
}

/** A duration in µs as the Operator tab shows it: "75 µs", "1.25 ms", "2.5 s". */
export function fmtMicros(us: number): string {
  if (us < 1_000) return `${us < 10 ? us.toFixed(1) : Math.round(us)} µs`;
  const ms = us / 1_000;
  if (ms < 1_000) return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms)} ms`;
  const s = ms / 1_000;
  return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
}

/** "<10 µs" and ">10 s" at the edges; "no samples" without any. */
export function fmtQuantile(q: Quantile | null): string {
  if (!q) return 'no samples';
  if (q.edge === 'below') return `<${fmtMicros(q.us).replace(/\.0+ /, ' ')}`;
  if (q.edge === 'above') return `>${fmtMicros(q.us).replace(/\.0+ /, ' ')}`;
  return fmtMicros(q.us);
}

/** Messages (or any count) a second, compact. */
export function fmtPerS(v: number | null): string {
  if (v === null) return '—';
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return v >= 100 ? String(Math.round(v)) : v.toFixed(1).replace(/\.0$/, '');
}

/** Bytes a second: "512 B/s", "9.6 kB/s", "1.23 MB/s" (decimal units). */
export function fmtBytesPerS(v: number | null): string {
  if (v === null) return '—';
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} GB/s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} MB/s`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} kB/s`;
  return `${Math.round(v)} B/s`;
}
