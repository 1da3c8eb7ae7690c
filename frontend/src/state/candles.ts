import type { Candle } from '../protocol';

export type Interval = '1s' | '1m' | '5m' | '1h';
export const INTERVALS: readonly Interval[] = ['1s', '1m', '5m', '1h'];
export const INTERVAL_MS: Record<Interval, number> = { '1s': 1_000, '1m': 60_000, '5m': 300_000, '1h': 3_600_000 };

/** A chart bar: floats are fine here, the chart is a picture, not a ledger. */
export interface Bar {
  /** Bucket start, seconds since epoch (lightweight-charts' UTCTimestamp). */
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

/** Turns history candles plus live trades into bars for one symbol and interval. */
export class CandleBuilder {
  bars: Bar[] = [];
  /** Trades at or before this time (ms) are already inside the history candles. */
  private historyUntilMs = 0;

  constructor(
    readonly intervalMs: number,
    private readonly maxBars = 1_500,
  ) {}

  bucketOf(tsMs: number): number {
    return Math.floor(tsMs / this.intervalMs) * (this.intervalMs / 1000);
  }

  setHistory(candles: Candle[], untilMs: number): void {
    const bars = candles
      .map((c) => ({
        time: this.bucketOf(c.t / 1e6),
        open: Number(c.open),
        high: Number(c.high),
        low: Number(c.low),
        close: Number(c.close),
        volume: Number(c.volume),
      }))
      .filter((b) => Number.isFinite(b.open) && Number.isFinite(b.close))
      .sort((a, b) => a.time - b.time);
    // Keep bars built from trades that arrived while history was loading.
    const lastHist = bars.length ? bars[bars.length - 1].time : -Infinity;
    const live = this.bars.filter((b) => b.time > lastHist);
    this.bars = dedupe(bars).concat(live).slice(-this.maxBars);
    this.historyUntilMs = untilMs;
  }

  /**
   * Adds a trade; returns the bar it changed, or null if the trade is older
   * than the last bar (the chart can only update its newest bar cheaply).
   */
  addTrade(price: number, size: number, tsMs: number): Bar | null {
    if (!Number.isFinite(price) || tsMs <= this.historyUntilMs) return null;
    const time = this.bucketOf(tsMs);
    const last = this.bars[this.bars.length - 1];
    if (last && time < last.time) return null;
    if (last && time === last.time) {
      last.high = Math.max(last.high, price);
      last.low = Math.min(last.low, price);
      last.close = price;
      last.volume += size;
      return last;
    }
    const bar = { time, open: price, high: price, low: price, close: price, volume: size };
    this.bars.push(bar);
    if (this.bars.length > this.maxBars) this.bars.splice(0, this.bars.length - this.maxBars);
    return bar;
  }
}

function dedupe(bars: Bar[]): Bar[] {
  const out: Bar[] = [];
  for (const b of bars) {
    if (out.length && out[out.length - 1].time === b.time) out[out.length - 1] = b;
    else out.push(b);
  }
  return out;
}
