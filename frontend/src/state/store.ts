// The market state the widgets draw from. Stream events mutate it and mark
// what changed; views read it once per animation frame (see FrameScheduler),
// so the cost of an update is O(1) no matter how fast updates arrive.

import { type CandleData, type Instrument, type Side, type SymbolSnapshot, type TradeData, type Update, candleChannel, isCandleChannel } from '../protocol';
import type { StreamEvent } from '../stream/client';
import { addDec } from '../util/decimal';
import { OrderBook } from './book';
import { type Bar, CandleBuilder, INTERVAL_MS, type Interval } from './candles';
import { ClockOffset, RateMeter, RollingMedian } from './metrics';
import { type Staleness, staleness } from './staleness';

export interface SymbolState {
  symbol: string;
  bid?: string;
  bidSize?: string;
  ask?: string;
  askSize?: string;
  last?: string;
  lastSide?: Side;
  /** Session open from /v1/snapshot stats; change = last - open. */
  open?: string;
  /** Exact decimal; trades with seq <= statsSeq are already inside it. */
  volume?: string;
  statsSeq: number;
  /** The server had no stats yet (no trade this session): the first trade opens it. */
  openFromFirstTrade?: boolean;
  /** When a quote or trade of this symbol last arrived (browser clock, ms). */
  lastDataMs?: number;
}

export interface TapeRow {
  tsMs: number;
  price: string;
  size: string;
  side: Side;
  tradeId: number;
  /** The trade's sequence (per symbol), when known. */
  seq?: number;
}

export type BookStatus = 'waiting' | 'live' | 'resync';

/** One symbol's book and how current it is. */
interface BookState {
  book: OrderBook;
  status: BookStatus;
  /** When the book last changed (browser ms). */
  lastMs?: number;
  /** Exchange time of its last change (ms). */
  eventMs?: number;
}

const emptyBook = (): BookState => ({ book: new OrderBook(), status: 'waiting' });

/** `ok`: a normal recovery (reconnected, resynced); `warn`/`error`: faults. */
export interface Notice {
  atMs: number;
  level: 'info' | 'ok' | 'warn' | 'error';
  text: string;
}

/**
 * A replay sends no session stats, so the watchlist's change and volume come
 * from the replayed market: the open is the first trade replayed since the
 * replay's start (or its last seek, which clears the symbol's state), and the
 * volume the sum of the trade sizes replayed since then, exact.
 */
export function replayStats(s: SymbolState, t: { price: string; size: string }): void {
  if (s.open === undefined) s.open = t.price;
  s.volume = s.volume === undefined ? t.size : (addDec(s.volume, t.size) ?? s.volume);
}

export function noticeKind(n: Notice): 'fault' | 'recovery' | 'info' {
  return n.level === 'ok' ? 'recovery' : n.level === 'info' ? 'info' : 'fault';
}

/** The replay session as the last status message (and the events since) describe it. */
export interface ReplayInfo {
  state: 'connecting' | 'playing' | 'paused' | 'ended' | 'failed';
  speed: string;
  fromMs: number;
  toMs: number;
  /** Exchange time the replay has reached, ms. */
  atMs: number;
  events?: number;
}

const TAPE_MAX = 200;
const NOTICES_MAX = 50;
const REPLAY_TRADES_MAX = 200_000;

export class MarketStore {
  readonly instruments = new Map<string, Instrument>();
  readonly symbols = new Map<string, SymbolState>();

  selected: string | null = null;
  interval: Interval = '1m';
  /**
   * The book the depth panel shows: the selected symbol's. Live, the stream
   * carries that symbol's book only; in replay, every replayed symbol's book
   * is kept (replayBooks) and this is the selected one's entry, so choosing
   * another symbol mid-replay shows its book at once, at the replay's point.
   */
  private shownBook: BookState = emptyBook();
  private readonly replayBooks = new Map<string, BookState>();
  tape: TapeRow[] = [];
  candles = new CandleBuilder(INTERVAL_MS['1m']);
  /** The last live candle applied to the chart (what the e2e suite compares the chart with). */
  lastCandle: CandleData | null = null;

  /** Replay plays historical clocks: latency numbers would be meaningless. */
  replay = false;
  replayInfo: ReplayInfo | null = null;
  /** Every replayed trade per symbol, so a symbol or interval chosen mid-replay redraws at once. */
  private readonly replayTrades = new Map<string, TapeRow[]>();
  /** Since when the stream has been up (browser ms); null while it is down. */
  streamUpSinceMs: number | null = null;
  /** Venues whose feed /v1/feeds reports not live ('*' when it cannot be told which). */
  readonly feedsDown = new Set<string>();
  get book(): OrderBook {
    return this.shownBook.book;
  }

  get bookStatus(): BookStatus {
    return this.shownBook.status;
  }

  /** When the selected symbol's book last changed (browser ms). */
  get bookLastMs(): number | undefined {
    return this.shownBook.lastMs;
  }

  /** Exchange time of the book's last change (ms), as the depth panel shows it. */
  get bookEventMs(): number | undefined {
    return this.shownBook.eventMs;
  }
  /** Stamps of updates applied since the last frame: measured when that frame draws them. */
  private readonly pendingEvent: number[] = [];
  private readonly pendingSend: number[] = [];
  /** performance-free wall time of the last latency sample (ms). */
  lastSampleMs: number | null = null;
  readonly latencyEvent = new RollingMedian(512);
  readonly latencySend = new RollingMedian(512);
  /** Latency compares server stamps with this browser's clock, set to the server's by ping round trips. */
  readonly clockOffset = new ClockOffset();
  readonly rate = new RateMeter();
  gaps = 0;
  readonly notices: Notice[] = [];

  // What changed since the last frame.
  readonly dirtySymbols = new Set<string>();
  readonly dirtyBars = new Map<number, Bar>();
  dirtyBook = false;
  dirtyTape = false;
  dirtyNotices = false;
  /** The chart must redraw from scratch (new symbol, interval or history). */
  dirtyChartReset = false;

  constructor(private readonly onDirty: () => void = () => {}) {}

  // ---- configuration ----------------------------------------------------

  setInstruments(list: Instrument[]): void {
    this.instruments.clear();
    for (const i of list) this.instruments.set(i.symbol, i);
  }

  track(symbol: string): SymbolState {
    let s = this.symbols.get(symbol);
    if (!s) {
      s = { symbol, statsSeq: -1 };
      this.symbols.set(symbol, s);
      this.dirtySymbols.add(symbol);
    }
    return s;
  }

  untrack(symbol: string): void {
    this.symbols.delete(symbol);
    this.dirtySymbols.delete(symbol);
  }

  select(symbol: string | null, interval: Interval = this.interval): void {
    this.selected = symbol;
    this.interval = interval;
    this.shownBook = (this.replay && symbol !== null && this.replayBooks.get(symbol)) || emptyBook();
    this.tape = [];
    this.resetCandles();
    this.rebuildFromReplay();
    this.dirtyBook = this.dirtyTape = true;
    this.onDirty();
  }

  setInterval(interval: Interval): void {
    this.interval = interval;
    this.resetCandles();
    this.rebuildFromReplay();
    this.onDirty();
  }

  /** In replay, a newly selected symbol or interval is drawn from the trades replayed so far. */
  private rebuildFromReplay(): void {
    if (!this.replay || !this.selected) return;
    const trades = this.replayTrades.get(this.selected);
    if (!trades?.length) return;
    for (const t of trades) this.candles.addTrade(Number(t.price), Number(t.size), t.tsMs);
    this.tape = trades.slice(-TAPE_MAX).reverse();
    this.dirtyTape = true;
    this.dirtyChartReset = true;
  }

  /** A replay seek: what was replayed so far no longer leads up to the new position. */
  clearReplayData(): void {
    this.clearData();
  }

  /**
   * The book a book message of `symbol` goes to: in replay, that symbol's own
   * (made on its first message; the selected symbol's is the one shown);
   * live, only the selected symbol's (null for any other).
   */
  private bookFor(symbol: string): BookState | null {
    if (!this.replay) return symbol === this.selected ? this.shownBook : null;
    let b = this.replayBooks.get(symbol);
    if (!b) this.replayBooks.set(symbol, (b = symbol === this.selected ? this.shownBook : emptyBook()));
    return b;
  }

  /** The live channel the chart's bars come from (selected symbol, selected interval). */
  get candleChannel() {
    return candleChannel(this.interval);
  }

  private resetCandles(): void {
    this.candles = new CandleBuilder(INTERVAL_MS[this.interval]);
    this.lastCandle = null;
    this.dirtyBars.clear();
    this.dirtyChartReset = true;
  }

  /** Clears all market data (entering or leaving replay). */
  clearData(): void {
    for (const s of this.symbols.values()) {
      const fresh: SymbolState = { symbol: s.symbol, statsSeq: -1 };
      this.symbols.set(s.symbol, fresh);
      this.dirtySymbols.add(s.symbol);
    }
    this.replayTrades.clear();
    this.replayBooks.clear();
    this.select(this.selected);
    this.latencyEvent.clear();
    this.latencySend.clear();
    this.pendingEvent.length = this.pendingSend.length = 0;
    this.lastSampleMs = null;
  }

  /** The stream went up (true) or down (false). */
  setStreamUp(up: boolean, nowMs = Date.now()): void {
    if (up && this.streamUpSinceMs === null) this.streamUpSinceMs = nowMs;
    if (!up) this.streamUpSinceMs = null;
  }

  /** How current a symbol's prices are. */
  symbolStaleness(symbol: string, nowMs = Date.now()): Staleness {
    const s = this.symbols.get(symbol);
    const venue = this.instruments.get(symbol)?.venue ?? '';
    return staleness({
      nowMs,
      lastDataMs: s?.lastDataMs,
      streamUpSinceMs: this.replay ? 0 : this.streamUpSinceMs,
      feedDown: !this.replay && (this.feedsDown.has('*') || this.feedsDown.has(venue)),
    });
  }

  /** How current the selected symbol's book is. */
  bookStaleness(nowMs = Date.now()): Staleness {
    const venue = this.selected ? (this.instruments.get(this.selected)?.venue ?? '') : '';
    return staleness({
      nowMs,
      lastDataMs: this.bookLastMs,
      streamUpSinceMs: this.replay ? 0 : this.streamUpSinceMs,
      feedDown: !this.replay && (this.feedsDown.has('*') || this.feedsDown.has(venue)),
      invalidated: this.bookStatus === 'resync',
    });
  }

  /**
   * Takes the latency samples of what this frame draws: call from the
   * animation frame that paints the updates applied since the last one.
   */
  measureDrawn(nowMs = Date.now()): void {
    if (!this.pendingEvent.length && !this.pendingSend.length) return;
    const now = nowMs + this.clockOffset.valueMs;
    for (const t of this.pendingEvent) this.latencyEvent.add(Math.max(0, now - t));
    for (const t of this.pendingSend) this.latencySend.add(Math.max(0, now - t));
    this.pendingEvent.length = this.pendingSend.length = 0;
    this.lastSampleMs = nowMs;
  }

  notice(level: Notice['level'], text: string): void {
    this.notices.unshift({ atMs: Date.now(), level, text });
    if (this.notices.length > NOTICES_MAX) this.notices.length = NOTICES_MAX;
    this.dirtyNotices = true;
    this.onDirty();
  }

  // ---- REST snapshot (stats the stream does not carry) ------------------

  applyRestSnapshot(snaps: SymbolSnapshot[]): void {
    for (const snap of snaps) {
      const s = this.symbols.get(snap.symbol);
      if (!s) continue;
      if (snap.quote && s.bid === undefined) {
        s.bid = snap.quote.bid;
        s.bidSize = snap.quote.bid_size;
        s.ask = snap.quote.ask;
        s.askSize = snap.quote.ask_size;
      }
      if (snap.last_trade && s.last === undefined) {
        s.last = snap.last_trade.price;
        s.lastSide = snap.last_trade.side;
      }
      if (snap.stats) {
        s.open = snap.stats.open;
        s.volume = snap.stats.volume;
        s.statsSeq = snap.last_trade?.seq ?? -1;
        s.openFromFirstTrade = false;
      } else if (s.volume === undefined) {
        s.volume = '0';
        s.statsSeq = snap.last_trade?.seq ?? -1;
        s.openFromFirstTrade = true;
      }
      this.dirtySymbols.add(s.symbol);
    }
    this.onDirty();
  }

  // ---- stream events ----------------------------------------------------

  apply(e: StreamEvent): void {
    switch (e.kind) {
      case 'snapshot': {
        const m = e.msg;
        this.clock(m.ts_event, m.ts_send);
        if (m.channel === 'quotes') {
          if (m.data) this.setQuote(m.symbol, m.data);
        } else if (m.channel === 'trades') {
          if (m.data) {
            this.setLast(m.symbol, m.data);
            // Seed an empty tape and chart with the last trade; a snapshot after a
            // reconnect must not put an old trade on top of newer ones.
            if (m.symbol === this.selected && this.tape.length === 0) this.addSelectedTrade({ ...m.data, seq: m.seq }, m.ts_event / 1e6);
          }
        } else if (m.channel === 'book') {
          const b = this.bookFor(m.symbol);
          if (b) {
            const shown = b === this.shownBook;
            if (shown && b.status === 'resync') this.notice('ok', `book ${m.symbol} resynced (fresh snapshot at seq ${m.seq})`);
            b.book.reset(m.data?.bids ?? [], m.data?.asks ?? [], m.seq);
            b.status = 'live';
            b.lastMs = Date.now();
            b.eventMs = m.ts_event ? m.ts_event / 1e6 : undefined;
            if (shown) this.dirtyBook = true;
          }
        } else if (m.data) {
          this.applyCandle(m.symbol, m.channel, m.data);
        }
        break;
      }
      case 'update':
        this.applyUpdate(e.update);
        break;
      case 'gap': {
        this.gaps++;
        // Lost trades are a fault; a restarted sequence, a server restart
        // (`epoch_changed`: our sequences are another run's, a fresh snapshot
        // follows), or a quote, book or candle stream resynced from a fresh
        // snapshot, is a normal recovery.
        const lost = e.channel === 'trades' && e.reason !== 'sequence_reset' && e.reason !== 'epoch_changed';
        this.notice(lost ? 'warn' : 'ok', `gap ${e.symbol} ${e.channel} ${e.from_seq}..${e.to_seq} (${e.reason})${lost ? '' : ': resynced'}`);
        break;
      }
      case 'book_reset': {
        // Keep the last levels, marked stale with their age, until the new snapshot.
        const b = this.bookFor(e.symbol);
        if (!b) break;
        b.status = 'resync';
        if (b === this.shownBook) {
          this.dirtyBook = true;
          this.notice(e.reason === 'invalidated by server' ? 'info' : 'warn', `book ${e.symbol} reset: ${e.reason}`);
        }
        break;
      }
      case 'error':
        // A refused resume (the server restarted) is answered by subscribing afresh: a recovery.
        this.notice(e.code === 'bad_since' ? 'ok' : 'error', `${e.code}: ${e.message}`);
        break;
      case 'live':
        this.notice('ok', `${e.symbol} ${e.channel}: stored history caught up with the live stream (seq ${e.seq})`);
        break;
      case 'replay': {
        const st = e.status;
        const prev = this.replayInfo;
        this.replayInfo = {
          state: st.state === 'paused' ? 'paused' : 'playing',
          speed: String(st.speed),
          fromMs: st.from / 1e6,
          toMs: st.to / 1e6,
          atMs: st.at / 1e6,
          events: prev?.events,
        };
        break;
      }
      case 'replay_end':
        if (this.replayInfo) {
          this.replayInfo.state = 'ended';
          this.replayInfo.events = e.end.events;
          this.replayInfo.atMs = this.replayInfo.toMs;
        }
        this.notice('ok', `replay finished: ${e.end.events} events`);
        break;
      case 'pong':
        if (e.rttMs !== null && e.clockOffsetMs !== null) this.clockOffset.add(e.rttMs, e.clockOffsetMs);
        break;
    }
    this.onDirty();
  }

  private applyUpdate(u: Update): void {
    this.rate.add();
    this.clock(u.ts_event, u.ts_send);
    if (this.replay && this.replayInfo && u.ts_event) this.replayInfo.atMs = Math.max(this.replayInfo.atMs, u.ts_event / 1e6);
    switch (u.channel) {
      case 'quotes':
        this.setQuote(u.symbol, u);
        break;
      case 'trades': {
        if (this.replay) this.recordReplayTrade(u);
        const s = this.setLast(u.symbol, u);
        if (s && this.replay) replayStats(s, u);
        else if (s && u.seq > s.statsSeq && s.volume !== undefined) {
          s.volume = addDec(s.volume, u.size) ?? s.volume;
          if (s.openFromFirstTrade && s.open === undefined) s.open = u.price;
        }
        if (u.symbol === this.selected) this.addSelectedTrade(u, u.ts_event / 1e6);
        break;
      }
      case 'book': {
        const b = this.bookFor(u.symbol);
        if (b?.status !== 'live') break;
        b.book.apply(u.bids ?? [], u.asks ?? [], u.seq);
        b.lastMs = Date.now();
        if (u.ts_event) b.eventMs = u.ts_event / 1e6;
        if (b === this.shownBook) this.dirtyBook = true;
        break;
      }
      default:
        if (isCandleChannel(u.channel)) this.applyCandle(u.symbol, u.channel, u);
    }
  }

  /** A live candle of the selected symbol and interval updates its bar or adds one. */
  private applyCandle(symbol: string, channel: string, c: CandleData): void {
    // Another interval's candles can still arrive just after a switch; replay has none.
    if (this.replay || symbol !== this.selected || channel !== this.candleChannel) return;
    const change = this.candles.applyCandle(c);
    if (!change) return;
    this.lastCandle = c;
    if (change.historical) this.dirtyChartReset = true;
    else this.dirtyBars.set(change.bar.time, change.bar);
  }

  /** Queues the update's stamps; measureDrawn() takes the samples when the frame draws it. */
  private clock(tsEvent: number | undefined, tsSend: number | undefined): void {
    if (this.replay) return;
    if (this.pendingEvent.length >= 1_024) return; // a frame that late measures the frame, not the wire
    if (tsEvent) this.pendingEvent.push(tsEvent / 1e6);
    if (tsSend) this.pendingSend.push(tsSend / 1e6);
  }

  private recordReplayTrade(u: TradeData & { symbol: string; ts_event: number }): void {
    let list = this.replayTrades.get(u.symbol);
    if (!list) this.replayTrades.set(u.symbol, (list = []));
    list.push({ tsMs: u.ts_event / 1e6, price: u.price, size: u.size, side: u.side, tradeId: u.trade_id });
    if (list.length > REPLAY_TRADES_MAX) list.splice(0, list.length - REPLAY_TRADES_MAX);
  }

  private setQuote(symbol: string, q: { bid: string; bid_size: string; ask: string; ask_size: string }): void {
    const s = this.symbols.get(symbol);
    if (!s) return;
    s.bid = q.bid;
    s.bidSize = q.bid_size;
    s.ask = q.ask;
    s.askSize = q.ask_size;
    s.lastDataMs = Date.now();
    this.dirtySymbols.add(symbol);
  }

  private setLast(symbol: string, t: TradeData): SymbolState | undefined {
    const s = this.symbols.get(symbol);
    if (!s) return undefined;
    s.last = t.price;
    s.lastSide = t.side;
    s.lastDataMs = Date.now();
    this.dirtySymbols.add(symbol);
    return s;
  }

  private addSelectedTrade(t: TradeData & { seq?: number }, tsMs: number): void {
    this.tape.unshift({ tsMs, price: t.price, size: t.size, side: t.side, tradeId: t.trade_id, seq: t.seq });
    if (this.tape.length > TAPE_MAX) this.tape.length = TAPE_MAX;
    this.dirtyTape = true;
    // Live bars come from the candle channel; replay carries no candles, so
    // its bars are built from the replayed trades.
    if (!this.replay) {
      // Except trades from stored history after a page load (CandleBuilder.fillFrom).
      const change = this.candles.fillTrade(Number(t.price), Number(t.size), tsMs);
      if (change?.historical) this.dirtyChartReset = true;
      else if (change) this.dirtyBars.set(change.bar.time, change.bar);
      return;
    }
    const bar = this.candles.addTrade(Number(t.price), Number(t.size), tsMs);
    if (bar) this.dirtyBars.set(bar.time, bar);
  }

  /** Hands the views what changed and forgets it. */
  takeDirty(): { symbols: string[]; bars: Bar[]; book: boolean; tape: boolean; notices: boolean; chartReset: boolean } {
    const out = {
      symbols: [...this.dirtySymbols],
      bars: [...this.dirtyBars.values()].sort((a, b) => a.time - b.time),
      book: this.dirtyBook,
      tape: this.dirtyTape,
      notices: this.dirtyNotices,
      chartReset: this.dirtyChartReset,
    };
    this.dirtySymbols.clear();
    this.dirtyBars.clear();
    this.dirtyBook = this.dirtyTape = this.dirtyNotices = this.dirtyChartReset = false;
    return out;
  }
}
