// Wire protocol v1 (ARCHITECTURE.md section 4). Prices and sizes stay decimal
// strings end to end; timestamps are integer nanoseconds (parsed as numbers,
// which is exact enough for millisecond display).

/** Widths of the live candle channels. */
export type CandleInterval = '1s' | '1m' | '5m' | '1h' | '1d';
export const CANDLE_INTERVALS: readonly CandleInterval[] = ['1s', '1m', '5m', '1h', '1d'];
/** OHLCV candles the server builds from trades as they arrive (docs/PROTOCOL.md, Candles). */
export type CandleChannel = `candles.${CandleInterval}`;
export const CANDLE_CHANNELS: readonly CandleChannel[] = CANDLE_INTERVALS.map((i) => `candles.${i}` as const);

export type Channel = 'quotes' | 'trades' | 'book' | CandleChannel;
/** Every channel, in the protobuf enum's order. */
export const CHANNELS: readonly Channel[] = ['quotes', 'trades', 'book', ...CANDLE_CHANNELS];

export function candleChannel(interval: CandleInterval): CandleChannel {
  return `candles.${interval}`;
}

export function isCandleChannel(channel: string): channel is CandleChannel {
  return (CANDLE_CHANNELS as readonly string[]).includes(channel);
}

export type Side = 'buy' | 'sell';
export type Level = [price: string, size: string];

export interface Clocks {
  ts_event: number;
  ts_recv?: number;
  ts_send?: number;
}

export interface QuoteData {
  bid: string;
  bid_size: string;
  ask: string;
  ask_size: string;
}

export interface TradeData {
  price: string;
  size: string;
  side: Side;
  trade_id: number;
}

export interface BookData {
  bids: Level[];
  asks: Level[];
}

/**
 * One candle's value so far; the same `start` comes again until an update with
 * `closed: true` carries its final value. `start` is the bucket start in ns
 * (whole seconds, so exact as a JS number).
 */
export interface CandleData {
  start: number;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
  trades: number;
  closed: boolean;
}

interface UpdateBase extends Clocks {
  symbol: string;
  seq: number;
}
/**
 * The server run that assigned a snapshot's or `live` marker's sequences
 * (microseconds since the Unix epoch at the server's start: exact in a JS
 * number). A resume sends it back with `since`, so that a restarted server
 * never takes another run's sequences for its own.
 */
interface Epoch {
  epoch?: number;
}
export type QuoteUpdate = UpdateBase & QuoteData & { channel: 'quotes' };
export type TradeUpdate = UpdateBase & TradeData & { channel: 'trades' };
export type BookUpdate = UpdateBase & BookData & { channel: 'book' };
export type CandleUpdate = UpdateBase & CandleData & { channel: CandleChannel };
export type Update = QuoteUpdate | TradeUpdate | BookUpdate | CandleUpdate;

export type SnapshotMsg =
  | (UpdateBase & Epoch & { type: 'snapshot'; channel: 'quotes'; data: QuoteData | null })
  | (UpdateBase & Epoch & { type: 'snapshot'; channel: 'trades'; data: TradeData | null })
  | (UpdateBase & Epoch & { type: 'snapshot'; channel: 'book'; data: BookData | null })
  | (UpdateBase & Epoch & { type: 'snapshot'; channel: CandleChannel; data: CandleData | null });

export interface BatchMsg {
  type: 'batch';
  updates: Update[];
}
export interface GapMsg {
  type: 'gap';
  symbol: string;
  channel: Channel;
  from_seq: number;
  to_seq: number;
  reason: string;
}
export interface ErrorMsg {
  type: 'error';
  code: string;
  message: string;
  op?: string;
  /** The stream an error is about, when it is about one (e.g. a refused `since`). */
  symbol?: string;
  channel?: Channel;
}
export interface PongMsg {
  type: 'pong';
  id?: number;
  /** The server's clock when it answered, ns since the epoch. */
  ts_send?: number;
}
export interface BookInvalidatedMsg {
  type: 'book_invalidated';
  symbol: string;
}
/** A resume or `since_time` start served from stored history has caught up: what follows is live. */
export interface LiveMsg extends Epoch {
  type: 'live';
  symbol: string;
  channel: Channel;
  /** The last stored sequence sent; live updates continue after it. */
  seq: number;
}

/** A replay session's state: first, and after each control (docs/PROTOCOL.md, Replay). */
export interface ReplayStatusMsg {
  type: 'replay';
  state: 'playing' | 'paused';
  /** "max" or a factor as a decimal string ("2.5"). */
  speed: string | number;
  /** Exchange time of the last event sent (or of the seek target), ns. */
  at: number;
  from: number;
  to: number;
  instruments?: { instrument_id: number; symbol: string; price_decimals: number; size_decimals: number }[];
}
/** The replay reached its end; a close 1000 follows. */
export interface ReplayEndMsg {
  type: 'end';
  events: number;
  from: number;
  to: number;
}

export type ServerMsg = SnapshotMsg | BatchMsg | GapMsg | ErrorMsg | PongMsg | BookInvalidatedMsg | LiveMsg | ReplayStatusMsg | ReplayEndMsg;

/** Replay session controls (sent on the replay WebSocket only). */
export type ReplayControl =
  | { op: 'pause' }
  | { op: 'resume' }
  | { op: 'speed'; speed: 'max' | number }
  | { op: 'seek'; to: number };

export type ClientOp =
  | {
      op: 'subscribe';
      channels: Channel[];
      symbols: string[];
      /** Resume after these sequences (per symbol) instead of a snapshot. */
      since?: Record<string, number>;
      /** The epoch the `since` sequences come from (only with `since`). */
      epoch?: number;
      /** Start from stored history at this exchange time (RFC 3339 or ns) instead of a snapshot; never with `since`. */
      since_time?: string | number;
    }
  | { op: 'unsubscribe'; channels: Channel[]; symbols: string[] }
  | { op: 'ping'; id: number };

/** Parses one JSON frame; returns null for anything that is not a known message. */
export function parseServerMsg(text: string): ServerMsg | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || typeof (v as { type?: unknown }).type !== 'string') return null;
  return v as ServerMsg;
}

// REST shapes
export interface Instrument {
  symbol: string;
  venue?: string;
  kind?: string;
  tick_size?: string;
  price_decimals?: number;
  size_decimals?: number;
}

export interface SymbolSnapshot {
  symbol: string;
  quote: (QuoteData & { seq: number; ts_event: number }) | null;
  last_trade: (TradeData & { seq: number; ts_event: number }) | null;
  stats: { open: string; high: string; low: string; volume: string; trades: number } | null;
}

export interface Candle {
  t: number;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
  trades?: number;
}

export interface FeedHealth {
  name: string;
  state: string;
  last_message_age_ms?: number | null;
  messages_per_sec?: number | null;
  messages?: number;
  resyncs?: number;
  reconnects?: number;
  parse_errors?: number;
  /** Not sent by every server build; shown when present. */
  last_error?: string | null;
}

/** GET /v1/stats. Store fields are null when the server runs without a store. */
export interface ServerStats {
  /** WebSocket (/v1/ws) connections only: replay, SSE and long-poll are not counted by the server. */
  connections: number;
  uptime_s?: number;
  events_published?: number;
  updates_delivered?: number;
  conflated?: number;
  dropped_trades?: number;
  book_resnapshots?: number;
  slow_consumer_closes?: number;
  store_lag_ms: number | null;
  store_written?: number | null;
  store_queued?: number | null;
  store_spilled_bytes?: number | null;
  store_journaled?: number | null;
  store_written_from_journal?: number | null;
  store_lost?: number | null;
  /** The server build's version. */
  version?: string;
  /** Subscriptions (channel × symbol) held by every client together. */
  subscriptions?: number;
  /** Per transport (ws, sse, poll, replay): connections now; updates and bytes written since start. */
  transports?: Record<string, { connections: number; subscriptions?: number; messages: number; bytes: number }>;
  /**
   * Latency histograms per leg. `bounds_us`: upper bounds of every bucket but
   * the last (µs, increasing); each leg: one count per bucket (`bounds_us.length + 1`,
   * the last above the last bound), cumulative since start (not across buckets).
   */
  latency?: { bounds_us: number[]; legs: Record<string, number[]> };
}
