import { CANDLE_INTERVALS, type Candle, type CandleData, type CandleInterval } from '../protocol';

export type Interval = CandleInterval;
export const INTERVALS: readonly Interval[] = CANDLE_INTERVALS;
export const INTERVAL_MS: Record<Interval, number> = { '1s': 1_000, '1m': 60_000, '5m': 300_000, '1h': 3_600_000, '1d': 86_400_000 };

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

/** What a live candle did to the bars: the bar, and whether it was an older one than the last. */
export interface CandleChange {
  bar: Bar;
  /** An older bar than the newest changed: the chart must redraw (it updates only its last bar cheaply). */
  historical: boolean;
}

/**
 * The bars of one symbol and interval: history candles from `GET /v1/candles`,
 * then the live `candles.<interval>` channel, whose updates replace the value of
 * their bucket (the server's value is the whole candle so far) and append new
 * buckets. In replay, which carries no candles, bars are built from trades.
 */
export class CandleBuilder {
  bars: Bar[] = [];
  /** Trades at or before this time (ms) are already inside the history candles. */
  private historyUntilMs = 0;
  /** fillFrom(): trades at or after this time (ms) rebuild their bars; null: trades do not touch live bars. */
  private fillFromMs: number | null = null;
  /** Buckets rebuilt from trades so far (their history value replaced). */
  private readonly refilled = new Set<number>();
  /** Bucket (s) of the first live candle: it and later ones come from the candle channel only. */
  private liveFrom: number | null = null;

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
    // Keep live bars that arrived while history was loading. The live value of
    // the newest history bucket wins too: the store writes trades a moment
    // after they stream, so history's last bucket can lag behind.
    const firstLive = this.bars.length ? this.bars[0].time : Infinity;
    const hist = dedupe(bars).filter((b) => b.time < firstLive);
    this.bars = hist.concat(this.bars).slice(-this.maxBars);
    this.historyUntilMs = untilMs;
  }

  /**
   * After a page load, history (REST) ends at its last candle, and the live
   * candle channel starts with the candle open at subscribe time: a bucket
   * that closed in between would stay as REST saw it (the store writes trades
   * a moment after they stream). So the trades stream starts from stored
   * history at the last history candle's start (`since_time`), and those
   * trades rebuild their buckets here, from that start, up to the first
   * bucket the candle channel sends (it owns that one and later ones: its
   * value is the whole candle, so it replaces anything built from trades).
   * Trades come exactly once and in order (the stream client drops repeated
   * sequences), so the rebuilt bars neither miss nor double a trade.
   */
  fillFrom(atMs: number): void {
    this.fillFromMs = atMs;
    this.refilled.clear();
  }

  /** A trade of the stream started with fillFrom(): the bar it rebuilt, or null if the candle channel covers it. */
  fillTrade(price: number, size: number, tsMs: number): CandleChange | null {
    if (this.fillFromMs === null || tsMs < this.fillFromMs || !Number.isFinite(price) || !Number.isFinite(size)) return null;
    const time = this.bucketOf(tsMs);
    if (this.liveFrom !== null && time >= this.liveFrom) return null;
    const bars = this.bars;
    let i = bars.length - 1;
    while (i >= 0 && bars[i].time > time) i--;
    const historical = i < bars.length - 1;
    if (i >= 0 && bars[i].time === time) {
      const bar = bars[i];
      if (!this.refilled.has(time)) {
        // The first trade of a bucket from the start on: the history value is dropped, the trades rebuild it.
        this.refilled.add(time);
        Object.assign(bar, { open: price, high: price, low: price, close: price, volume: size });
      } else {
        bar.high = Math.max(bar.high, price);
        bar.low = Math.min(bar.low, price);
        bar.close = price;
        bar.volume += size;
      }
      return { bar, historical };
    }
    this.refilled.add(time);
    const bar = { time, open: price, high: price, low: price, close: price, volume: size };
    bars.splice(i + 1, 0, bar);
    if (bars.length > this.maxBars) bars.splice(0, bars.length - this.maxBars);
    return { bar, historical };
  }

  /** Applies a live candle (its value so far, or its final one); returns what changed. */
  applyCandle(c: CandleData): CandleChange | null {
    const open = Number(c.open);
    const close = Number(c.close);
    if (!Number.isFinite(open) || !Number.isFinite(close) || !Number.isFinite(c.start)) return null;
    const time = Math.round(c.start / 1e9);
    if (this.liveFrom === null) this.liveFrom = time;
    const bar: Bar = { time, open, high: Number(c.high), low: Number(c.low), close, volume: Number(c.volume) };
    const bars = this.bars;
    const last = bars[bars.length - 1];
    if (!last || time > last.time) {
      bars.push(bar);
      if (bars.length > this.maxBars) bars.splice(0, bars.length - this.maxBars);
      return { bar, historical: false };
    }
    if (time === last.time) {
      Object.assign(last, bar);
      return { bar: last, historical: false };
    }
    // An older bucket: a closed candle's final value that arrived after a newer
    // bucket opened (or after history reached past it).
    let i = bars.length - 1;
    while (i >= 0 && bars[i].time > time) i--;
    if (i >= 0 && bars[i].time === time) {
      Object.assign(bars[i], bar);
      return { bar: bars[i], historical: true };
    }
    if (i < 0 && bars.length >= this.maxBars) return null; // older than anything kept
    bars.splice(i + 1, 0, bar);
    return { bar, historical: true };
  }

  /**
   * Adds a trade (replay only: live bars come from the candle channel); returns
   * the bar it changed, or null if the trade is older than the last bar (the
   * chart can only update its newest bar cheaply).
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
