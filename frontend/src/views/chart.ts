import {
  CandlestickSeries,
  ColorType,
  CrosshairMode,
  HistogramSeries,
  type IChartApi,
  type ISeriesApi,
  type UTCTimestamp,
  createChart,
} from 'lightweight-charts';
import { api, msToNs } from '../api';
import { type Bar, INTERVALS, INTERVAL_MS, type Interval } from '../state/candles';
import type { MarketStore } from '../state/store';
import { fmtAxisTick, fmtBarTime } from '../util/clock';
import { h } from '../util/dom';

const UP = '#26a69a';
const DOWN = '#ef5350';
const HISTORY_BARS = 300;

/**
 * Candles for the selected symbol: history from /v1/candles, then the live
 * `candles.<interval>` channel updates the last bar and appends new ones
 * (in replay, bars are built from the replayed trades).
 */
export class ChartView {
  private readonly chart: IChartApi;
  private readonly candles: ISeriesApi<'Candlestick'>;
  private readonly volume: ISeriesApi<'Histogram'>;
  private readonly title = h('span', { class: 'chart-title', 'data-testid': 'chart-title' });
  private readonly note = h('span', { class: 'note chart-note', 'data-testid': 'chart-note' });
  private readonly buttons = new Map<Interval, HTMLButtonElement>();
  readonly host: HTMLElement;
  private load: AbortController | null = null;
  /** Bars currently drawn; the e2e suite reads it through data-bars. */
  private drawn = 0;
  /** The newest bar as last drawn (a copy), for the e2e suite and debugging. */
  private lastDrawn: Bar | null = null;
  /**
   * Where the loaded history ends, for the symbol and interval it was loaded
   * for: the last history candle's start (ms), or the time of the REST read
   * when there was none. Null when history did not load.
   */
  historyEnd: { symbol: string; interval: Interval; atMs: number } | null = null;

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
    onInterval: (i: Interval) => void,
  ) {
    const switcher = h('div', { class: 'seg', 'data-testid': 'interval-switch' });
    for (const i of INTERVALS) {
      const b = h('button', { type: 'button', 'data-interval': i, 'aria-pressed': 'false' }, i);
      b.addEventListener('click', () => onInterval(i));
      this.buttons.set(i, b);
      switcher.append(b);
    }
    this.host = h('div', { class: 'chart-host', 'data-testid': 'chart', 'data-bars': '0' });
    root.append(h('div', { class: 'panel-head' }, this.title, switcher, this.note), this.host);

    this.chart = createChart(this.host, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: '#0b0e11' },
        textColor: '#8a939f',
        fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace',
        fontSize: 11,
        attributionLogo: false,
      },
      grid: { vertLines: { color: '#161b22' }, horzLines: { color: '#161b22' } },
      crosshair: { mode: CrosshairMode.Normal },
      rightPriceScale: { borderColor: '#222831' },
      timeScale: { borderColor: '#222831', timeVisible: true, secondsVisible: true, rightOffset: 4, barSpacing: 9 },
    });
    this.applyClock();
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.volume = this.chart.addSeries(HistogramSeries, { priceScaleId: 'vol', priceFormat: { type: 'volume' }, lastValueVisible: false, priceLineVisible: false });
    this.chart.priceScale('vol').applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
  }

  /** Axis and crosshair labels follow the clock setting and the interval (dates for daily bars). */
  applyClock(): void {
    const sec = INTERVAL_MS[this.store.interval] / 1000;
    this.chart.applyOptions({
      localization: { timeFormatter: (t: unknown) => fmtBarTime(Number(t), sec) },
      timeScale: { tickMarkFormatter: (t: unknown, type: number) => fmtAxisTick(Number(t), type, sec) },
    });
  }

  /** The labels the chart would draw for a bar time (seconds), for the e2e suite. */
  labelsFor(timeSec: number): { crosshair: string; tick: string } {
    const o = this.chart.options();
    const fmt = o.localization.timeFormatter as (t: unknown) => string;
    const tick = (o.timeScale as unknown as { tickMarkFormatter: (t: unknown, type: number) => string }).tickMarkFormatter;
    return { crosshair: fmt(timeSec), tick: tick(timeSec, 3) };
  }

  /** Title and interval buttons for the store's selected symbol and interval (live or replay). */
  resetView(): void {
    const { selected: symbol, interval } = this.store;
    for (const [i, b] of this.buttons) {
      b.classList.toggle('active', i === interval);
      b.setAttribute('aria-pressed', String(i === interval));
    }
    this.title.textContent = symbol ? `${symbol} · ${interval}` : '—';
    this.host.dataset.title = this.title.textContent;
    this.applyClock();
  }

  get barCount(): number {
    return this.drawn;
  }

  get lastBar(): Bar | null {
    return this.lastDrawn ? { ...this.lastDrawn } : null;
  }

  /** Starts a new chart for the store's selected symbol and interval and loads its history. */
  async loadHistory(): Promise<void> {
    const { selected: symbol, interval } = this.store;
    this.resetView();
    this.setNote('');
    this.load?.abort();
    this.historyEnd = null;
    if (!symbol) return;
    const inst = this.store.instruments.get(symbol);
    if (inst?.price_decimals !== undefined) {
      const minMove = Number(inst.tick_size) || Math.pow(10, -inst.price_decimals);
      this.candles.applyOptions({ priceFormat: { type: 'price', precision: inst.price_decimals, minMove } });
    }
    const ctl = new AbortController();
    this.load = ctl;
    const now = Date.now();
    const from = now - INTERVAL_MS[interval] * HISTORY_BARS;
    const res = await api.candles(symbol, interval, msToNs(from), msToNs(now), ctl.signal);
    if (ctl.signal.aborted || symbol !== this.store.selected || interval !== this.store.interval) return;
    if (res.ok && Array.isArray(res.data.candles)) {
      this.store.candles.setHistory(res.data.candles, now);
      this.store.dirtyChartReset = true;
      const last = res.data.candles.reduce((t, c) => (Number.isFinite(c.t) && c.t > t ? c.t : t), -Infinity);
      this.historyEnd = { symbol, interval, atMs: Number.isFinite(last) ? Math.floor(last / 1e6) : now };
      if (res.data.candles.length === 0) this.setNote('no history yet · live');
    } else {
      // History is a nicety; the live candle channel keeps the chart useful.
      // Short enough to read whole beside the interval switch; a failure's
      // message (of any length) is in the tooltip.
      if (res.ok || res.missing || res.status === 503) this.setNote('history not available · live only');
      else this.setNote('history failed · live only', `history failed: ${res.message} · live candles only`);
    }
  }

  setNote(text: string, title = text): void {
    this.note.textContent = text;
    this.note.title = title;
  }

  /** Called once per frame with the bars that changed. */
  render(reset: boolean, changed: Bar[]): void {
    if (reset) {
      const bars = this.store.candles.bars;
      this.candles.setData(bars.map(toCandle));
      this.volume.setData(bars.map(toVolume));
      this.drawn = bars.length;
    } else {
      for (const b of changed) {
        this.candles.update(toCandle(b));
        this.volume.update(toVolume(b));
      }
      this.drawn = this.store.candles.bars.length;
    }
    const bars = this.store.candles.bars;
    this.lastDrawn = bars.length ? { ...bars[bars.length - 1] } : null;
    this.host.dataset.bars = String(this.drawn);
  }
}

function toCandle(b: Bar) {
  return { time: b.time as UTCTimestamp, open: b.open, high: b.high, low: b.low, close: b.close };
}

function toVolume(b: Bar) {
  return { time: b.time as UTCTimestamp, value: b.volume, color: b.close >= b.open ? 'rgba(38,166,154,0.35)' : 'rgba(239,83,80,0.35)' };
}
