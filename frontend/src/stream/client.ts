// The stream client: one logical market-data stream over WebSocket, falling
// back to SSE and then long-polling, with sequence checking per
// (channel, symbol) so the rest of the app only ever sees in-order data.
// Transports are injected (constructor options) so tests drive fake ones.

import {
  type BookUpdate,
  type Channel,
  type ClientOp,
  type ReplayControl,
  type ReplayEndMsg,
  type ReplayStatusMsg,
  type ServerMsg,
  type SnapshotMsg,
  type Update,
  CHANNELS,
  isCandleChannel,
  parseServerMsg,
} from '../protocol';
import { authHeaders } from '../auth';
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay } from './backoff';
import { GatewayList } from './gateways';
import { SseParser, isEventStream } from './sse';

export type TransportKind = 'ws' | 'sse' | 'poll';
export type Phase = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'closed';
/** What the status bar shows. */
export type ConnLabel = 'connecting' | 'live' | 'reconnecting' | 'sse' | 'poll' | 'closed';

export interface ConnState {
  phase: Phase;
  transport: TransportKind;
  /** Consecutive failed attempts on the current transport. */
  attempt: number;
  label: ConnLabel;
  /** Origin of the gateway in use (being connected to, live on, or to be retried). */
  gateway: string;
}

export type StreamEvent =
  | { kind: 'snapshot'; msg: SnapshotMsg }
  | { kind: 'update'; update: Update }
  | { kind: 'gap'; symbol: string; channel: Channel; from_seq: number; to_seq: number; reason: string; origin: 'server' | 'client' }
  | { kind: 'book_reset'; symbol: string; reason: string }
  | { kind: 'error'; code: string; message: string; symbol?: string; channel?: Channel }
  | { kind: 'live'; symbol: string; channel: Channel; seq: number }
  | { kind: 'replay'; status: ReplayStatusMsg }
  | { kind: 'replay_end'; end: ReplayEndMsg }
  /** `clockOffsetMs`: the server's clock minus this browser's, estimated from
   *  the pong's `ts_send` and the round trip's midpoint (null without either). */
  | { kind: 'pong'; id: number; rttMs: number | null; clockOffsetMs: number | null };

// Minimal structural types, satisfied by the browser classes and by fakes.
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string[]) => WebSocketLike;

/** Whether `token` can be sent as a WebSocket subprotocol (RFC 7230 `tchar`s only). */
export function protocolSafe(token: string): boolean {
  return /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(token);
}

/** What the SSE reader needs of a response body (a ReadableStream of bytes). */
export interface BodyReaderLike {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}
export interface FetchResponseLike {
  ok: boolean;
  status: number;
  json(): Promise<unknown>;
  headers?: { get(name: string): string | null };
  /** The streamed body (SSE); null or missing where the browser cannot stream a response. */
  body?: { getReader(): BodyReaderLike } | null;
}
export type FetchLike = (url: string, init?: { signal?: AbortSignal; headers?: Record<string, string> }) => Promise<FetchResponseLike>;

/** Lets go of a response's body that will not be read (a no-op once read or locked). */
function discard(res: FetchResponseLike): void {
  try {
    void res.body?.getReader().cancel().catch(() => {});
  } catch {
    /* already read (json()) or locked */
  }
}

export interface StreamClientOptions {
  /** http(s)://host:port of the gateway; WebSocket URLs are derived from it. Ignored when `gateways` is given. */
  baseUrl?: string;
  /**
   * Several gateways of one cluster (same sequences and epoch): a connection
   * attempt that fails moves the next one to the next gateway; a connection
   * that was open and dropped is retried on the same gateway first (and moves
   * on if that fails too), except after close code 1001 (that gateway is
   * shutting down), which moves on at once. Resumes go as on one server.
   */
  gateways?: GatewayList;
  wsPath?: string;
  ssePath?: string;
  pollPath?: string;
  /** undefined = use the global; null = not available. */
  WebSocket?: WebSocketCtor | null;
  /** Reads SSE (a streamed body) and long-polls. */
  fetch?: FetchLike | null;
  /** Transports to try, in order. */
  transports?: TransportKind[];
  /** Failures before a transport that never opened is given up for the next one. */
  failuresBeforeFallback?: number;
  backoff?: BackoffOptions;
  random?: () => number;
  /** WebSocket ping interval; 0 disables the heartbeat. */
  heartbeatMs?: number;
  /** Silence longer than this on an open WebSocket counts as a dead connection. */
  idleTimeoutMs?: number;
  /** false for one-shot streams such as replay. */
  reconnect?: boolean;
  /** false when the URL itself selects the data (replay): no subscribe ops are sent. */
  sendSubscribe?: boolean;
  /**
   * Access token, never put in a URL: a `bearer.<token>` subprotocol on
   * WebSockets, `Authorization: Bearer` on SSE (read with fetch) and polls. A
   * token a subprotocol cannot hold skips the WebSocket for the next transport.
   */
  token?: string | null;
  onEvent: (e: StreamEvent) => void;
  onState?: (s: ConnState) => void;
}

type SeqTable = Record<Channel, Map<string, number>>;

function perChannel<T>(make: () => T): Record<Channel, T> {
  return Object.fromEntries(CHANNELS.map((c) => [c, make()])) as Record<Channel, T>;
}

function emptySeqTable(): SeqTable {
  return perChannel(() => new Map<string, number>());
}

/**
 * Channels that resume with `since` after a reconnect, so that what was missed
 * arrives from the server's ring: trades (never conflated) and candles (a
 * closed candle's final value is never dropped). Quotes and books restart
 * from fresh snapshots.
 */
function resumes(channel: Channel): boolean {
  return channel === 'trades' || isCandleChannel(channel);
}

/** Where each stream of one channel stands: what a (re)subscribe is built from. */
export interface ResumeState {
  /** Last sequence seen per symbol. */
  lastSeq: ReadonlyMap<string, number>;
  /** Epoch of those sequences per symbol (from the stream's latest snapshot or `live` marker). */
  epochs: ReadonlyMap<string, number>;
  /** Symbols to start from stored history at this exchange time (RFC 3339) rather than a snapshot. */
  startAt: ReadonlyMap<string, string>;
}

/**
 * The subscribe ops for one channel's symbols after a (re)connect. A stream
 * with a last sequence resumes with `since` and the epoch that sequence came
 * from; the server takes one epoch per request, so streams of different
 * epochs (or of none known) go in separate requests. A stream without one
 * that should start from a point in time gets `since_time` (which cannot be
 * combined with `since`); the rest start from snapshots.
 */
export function subscribeOps(channel: Channel, symbols: readonly string[], st: ResumeState, resume = true): ClientOp[] {
  const plain: string[] = [];
  const bySince = new Map<number | undefined, Record<string, number>>();
  const byTime = new Map<string, string[]>();
  for (const s of symbols) {
    const seq = resume ? st.lastSeq.get(s) : undefined;
    const at = st.startAt.get(s);
    if (seq !== undefined) {
      const epoch = st.epochs.get(s);
      if (!bySince.has(epoch)) bySince.set(epoch, {});
      bySince.get(epoch)![s] = seq;
    } else if (at !== undefined) {
      if (!byTime.has(at)) byTime.set(at, []);
      byTime.get(at)!.push(s);
    } else {
      plain.push(s);
    }
  }
  const ops: ClientOp[] = [];
  const withSince = [...bySince].map(([epoch, since]) => {
    const names = Object.keys(since);
    return { names, op: { op: 'subscribe', channels: [channel], symbols: names, since, ...(epoch === undefined ? {} : { epoch }) } as ClientOp };
  });
  // The request with the snapshot-started symbols carries the first `since`
  // group (as it always has); further groups and time starts follow.
  if (plain.length || withSince.length) {
    const first = withSince.shift();
    if (first) {
      const op = first.op as Extract<ClientOp, { op: 'subscribe' }>;
      ops.push({ ...op, symbols: [...plain, ...first.names].sort((a, b) => symbols.indexOf(a) - symbols.indexOf(b)) });
    } else {
      ops.push({ op: 'subscribe', channels: [channel], symbols: plain });
    }
  }
  for (const w of withSince) ops.push(w.op);
  for (const [at, names] of byTime) ops.push({ op: 'subscribe', channels: [channel], symbols: names, since_time: at });
  return ops;
}

export class StreamClient {
  private readonly opts: Required<Omit<StreamClientOptions, 'onState' | 'WebSocket' | 'fetch' | 'token' | 'baseUrl' | 'gateways'>> & {
    onState?: (s: ConnState) => void;
    token?: string | null;
  };
  /** Where connections go: the one `baseUrl`, or the `gateways` given. */
  readonly gateways: GatewayList;
  private readonly WS: WebSocketCtor | null;
  private readonly fetchFn: FetchLike | null;

  private readonly subs: Record<Channel, Set<string>> = perChannel(() => new Set<string>());
  private readonly lastSeq: SeqTable = emptySeqTable();
  /** Epoch of each stream's sequences, from its latest snapshot or `live` marker; sent back with `since`. */
  private readonly epochs: SeqTable = emptySeqTable();
  /**
   * The epoch of the server run on the current connection (from any snapshot
   * or live marker on it), and the streams that got sequences on it without an
   * epoch of their own: a `since_time` start the server served from its ring
   * sends neither a snapshot nor a live marker. Their sequences are that run's,
   * so they take its epoch.
   */
  private connEpoch: number | undefined = undefined;
  private readonly unEpoched = new Set<string>();
  /** Streams to start from stored history at a time (RFC 3339) until they have a sequence of their own. */
  private readonly startAt: Record<Channel, Map<string, string>> = perChannel(() => new Map<string, string>());
  /** Books dropped after a sequence break, waiting for a fresh snapshot. */
  private readonly bookResync = new Set<string>();
  /** Streams resumed with `since` on this connection whose first message is still to come. */
  private readonly resuming: Record<Channel, Set<string>> = perChannel(() => new Set<string>());

  private transportIdx = 0;
  private phase: Phase = 'idle';
  private attempt = 0;
  private failures = 0;
  private everOpened: Record<TransportKind, boolean> = { ws: false, sse: false, poll: false };
  private started = false;
  /** Bumped on every (re)connect; callbacks from older sessions are ignored. */
  private gen = 0;

  private ws: WebSocketLike | null = null;
  private sseAbort: AbortController | null = null;
  /**
   * The SSE stream's last event id (its cursor), sent as `Last-Event-ID` when
   * it reconnects, as EventSource does: the server resumes every stream
   * exactly after it. A new stream (a subscription change) starts without.
   */
  private sseLastEventId: string | null = null;
  /** The last refusal told for an SSE or poll request (so a retry loop says it once). */
  private lastRefusal: string | null = null;
  private pollAbort: AbortController | null = null;
  private pollCursor: string | null = null;
  /** The next connect() reopens an SSE/poll stream for a new subscription: not a reconnect, so no state change. */
  private quietRestart = false;

  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private restartTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private lastRx = 0;
  private pingId = 0;
  private readonly pingsInFlight = new Map<number, number>();

  constructor(options: StreamClientOptions) {
    const g = globalThis as unknown as { WebSocket?: WebSocketCtor; fetch?: FetchLike };
    this.WS = options.WebSocket === undefined ? (g.WebSocket ?? null) : options.WebSocket;
    this.fetchFn = options.fetch === undefined ? (g.fetch ? g.fetch.bind(globalThis) : null) : options.fetch;
    if (!options.gateways && options.baseUrl === undefined) throw new Error('StreamClient needs baseUrl or gateways');
    this.gateways = options.gateways ?? new GatewayList([options.baseUrl!]);
    this.opts = {
      wsPath: '/v1/ws',
      ssePath: '/v1/sse',
      pollPath: '/v1/poll',
      transports: ['ws', 'sse', 'poll'],
      failuresBeforeFallback: 3,
      backoff: DEFAULT_BACKOFF,
      random: Math.random,
      heartbeatMs: 10_000,
      idleTimeoutMs: 30_000,
      reconnect: true,
      sendSubscribe: true,
      ...options,
    };
  }

  // ---- public API -------------------------------------------------------

  get state(): ConnState {
    return { phase: this.phase, transport: this.transport, attempt: this.attempt, label: this.label(), gateway: this.gateway };
  }

  /** Origin of the gateway in use. */
  get gateway(): string {
    return this.gateways.current;
  }

  get transport(): TransportKind {
    return this.opts.transports[Math.min(this.transportIdx, this.opts.transports.length - 1)];
  }

  /** Last sequence seen, per channel and symbol (what a resume sends as `since`). */
  seqOf(channel: Channel, symbol: string): number | undefined {
    return this.lastSeq[channel].get(symbol);
  }

  /** Epoch of that sequence (what a resume sends as `epoch`). */
  epochOf(channel: Channel, symbol: string): number | undefined {
    return this.epochs[channel].get(symbol);
  }

  subscribed(channel: Channel): string[] {
    return [...this.subs[channel]];
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  stop(): void {
    this.started = false;
    this.teardown();
    this.setPhase('closed');
  }

  /** Drops the current connection as if the network had, then reconnects and resumes as usual. */
  dropConnection(): void {
    if (this.started) this.onFailure(this.gen);
  }

  subscribe(channels: Channel[], symbols: string[]): void {
    const added: Partial<Record<Channel, string[]>> = {};
    for (const ch of channels) {
      for (const s of symbols) {
        if (this.subs[ch].has(s)) continue;
        this.subs[ch].add(s);
        // A new subscription starts from the server's snapshot, never from stale state.
        this.lastSeq[ch].delete(s);
        this.epochs[ch].delete(s);
        (added[ch] ??= []).push(s);
      }
    }
    if (Object.keys(added).length === 0) return;
    if (this.transport === 'ws') {
      for (const ch of CHANNELS) if (added[ch]) for (const op of this.opsFor(ch, added[ch]!, false)) this.send(op);
    } else {
      this.scheduleRestart();
    }
  }

  /**
   * The stream (WebSocket only) starts from stored history at `atMs` (exchange
   * time) instead of a snapshot: `since_time` on its subscribe. Call before
   * subscribing it (or before start()); once the stream has a sequence of its
   * own, reconnects resume with `since` as usual.
   */
  startFrom(channel: Channel, symbol: string, atMs: number): void {
    this.startAt[channel].set(symbol, new Date(Math.floor(atMs)).toISOString());
  }

  unsubscribe(channels: Channel[], symbols: string[]): void {
    const removed: Partial<Record<Channel, string[]>> = {};
    for (const ch of channels) {
      for (const s of symbols) {
        if (!this.subs[ch].delete(s)) continue;
        this.lastSeq[ch].delete(s);
        this.epochs[ch].delete(s);
        this.startAt[ch].delete(s);
        if (ch === 'book') this.bookResync.delete(s);
        (removed[ch] ??= []).push(s);
      }
    }
    if (Object.keys(removed).length === 0) return;
    if (this.transport === 'ws') {
      for (const ch of CHANNELS) if (removed[ch]) this.send({ op: 'unsubscribe', channels: [ch], symbols: removed[ch]! });
    } else {
      this.scheduleRestart();
    }
  }

  /** Sends a ping over WebSocket; the matching pong event carries the round trip. */
  ping(): number | null {
    if (this.transport !== 'ws' || !this.ws || this.phase !== 'live') return null;
    const id = ++this.pingId;
    this.pingsInFlight.set(id, Date.now());
    this.send({ op: 'ping', id });
    return id;
  }

  /** Sends a replay control on the open WebSocket (replay sessions only); false if not sent. */
  control(op: ReplayControl): boolean {
    if (!this.ws || this.phase !== 'live') return false;
    try {
      this.ws.send(JSON.stringify(op));
      return true;
    } catch {
      return false;
    }
  }

  /** Forgets every sequence seen: a replay seek starts the streams over from another point in time. */
  resetSequences(): void {
    for (const ch of CHANNELS) {
      this.lastSeq[ch].clear();
      this.epochs[ch].clear();
      this.resuming[ch].clear();
    }
    this.bookResync.clear();
  }

  // ---- connection management -------------------------------------------

  private label(): ConnLabel {
    if (this.phase === 'live') return this.transport === 'ws' ? 'live' : this.transport;
    if (this.phase === 'idle') return 'connecting';
    return this.phase;
  }

  private setPhase(phase: Phase): void {
    this.phase = phase;
    this.opts.onState?.(this.state);
  }

  private connect(): void {
    if (!this.started) return;
    this.teardown();
    this.bookResync.clear();
    for (const ch of CHANNELS) this.resuming[ch].clear();
    this.connEpoch = undefined;
    this.unEpoched.clear();
    const gen = ++this.gen;
    // Reopening a live SSE/poll stream for a new subscription is not a reconnect:
    // the state stays live unless the new stream fails.
    const quiet = this.quietRestart && this.phase === 'live';
    this.quietRestart = false;
    if (!quiet) this.setPhase(this.attempt === 0 && !this.everOpened[this.transport] ? 'connecting' : 'reconnecting');
    switch (this.transport) {
      case 'ws':
        return this.connectWs(gen);
      case 'sse':
        return this.connectSse(gen);
      case 'poll':
        return void this.pollLoop(gen);
    }
  }

  /** Closes whatever transport is open and cancels timers, without changing subscriptions. */
  private teardown(): void {
    this.gen++;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.retryTimer = this.restartTimer = this.heartbeat = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'client closing');
      } catch {
        /* already closed */
      }
    }
    this.sseAbort?.abort();
    this.sseAbort = null;
    this.pollAbort?.abort();
    this.pollAbort = null;
    this.pingsInFlight.clear();
  }

  /**
   * A transport attempt failed: retry it with backoff, or move on to the next
   * transport. With several gateways, an attempt that never opened (refused,
   * or a drop whose retry failed) sends the next attempt to the next gateway;
   * `moveOn` (the gateway said it is shutting down) does so at once.
   */
  private onFailure(gen: number, moveOn = false): void {
    if (gen !== this.gen || !this.started) return;
    const dropped = this.phase === 'live';
    this.teardown();
    if (!this.opts.reconnect) {
      this.started = false;
      this.setPhase('closed');
      return;
    }
    if (this.gateways.size > 1 && (!dropped || moveOn)) {
      this.gateways.advance();
      // A poll cursor (and an SSE event id, the same cursor) belongs to the gateway that issued it.
      this.pollCursor = null;
      this.sseLastEventId = null;
    }
    if (!this.everOpened[this.transport]) {
      this.failures++;
      // A refused gateway says nothing about the transport: give every gateway a try first.
      if (this.failures >= Math.max(this.opts.failuresBeforeFallback, this.gateways.size) && this.fallback()) return;
    }
    this.scheduleRetry();
  }

  /** Moves to the next transport at once. Returns false if there is none. */
  private fallback(): boolean {
    if (this.transportIdx >= this.opts.transports.length - 1) return false;
    this.transportIdx++;
    this.failures = 0;
    this.attempt = 0;
    this.connect();
    return true;
  }

  private scheduleRetry(): void {
    const delay = backoffDelay(this.attempt, this.opts.backoff, this.opts.random);
    this.attempt++;
    this.setPhase('reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private opened(): void {
    this.lastRefusal = null;
    this.everOpened[this.transport] = true;
    this.attempt = 0;
    this.failures = 0;
    this.setPhase('live');
  }

  /** SSE and poll encode the subscription in the URL, so changes reopen the stream (coalesced). */
  private scheduleRestart(): void {
    if (!this.started || this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.pollCursor = null;
      this.sseLastEventId = null;
      this.quietRestart = true;
      this.connect();
    }, 0);
  }

  /** A stream URL on the gateway in use. It never carries the token (URLs end up in logs and histories). */
  private url(path: string, ws = false): string {
    const base = this.gateways.current.replace(/\/$/, '');
    return (ws ? base.replace(/^http/, 'ws') : base) + path;
  }

  /** WebSocket subprotocols: the JSON format and, with a token, `bearer.<token>`
   * (the server echoes only the format; the token stays out of URLs and logs).
   * Null: a token a subprotocol cannot hold (characters outside RFC 7230's
   * `tchar`, e.g. `/` or `=`), which no WebSocket can carry but in its URL. */
  private wsProtocols(): string[] | undefined | null {
    if (!this.opts.token) return undefined;
    return protocolSafe(this.opts.token) ? ['tickwire.v1.json', `bearer.${this.opts.token}`] : null;
  }

  // ---- WebSocket --------------------------------------------------------

  private connectWs(gen: number): void {
    if (!this.WS) {
      if (!this.fallback()) this.setPhase('closed');
      return;
    }
    const protocols = this.wsProtocols();
    if (protocols === null) {
      // The token would have to go in the URL: use the next transport, which sends a header.
      if (!this.fallback()) this.setPhase('closed');
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = protocols ? new this.WS(this.url(this.opts.wsPath, true), protocols) : new this.WS(this.url(this.opts.wsPath, true));
    } catch {
      // A constructor that throws (blocked by policy, bad URL) will not work on retry either.
      if (!this.fallback()) this.onFailure(gen);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      this.opened();
      if (this.opts.sendSubscribe) this.resubscribe();
      this.startHeartbeat(gen);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      if (typeof ev.data === 'string') this.receiveText(ev.data);
    };
    ws.onclose = (ev) => {
      // Normal closes and lost connections just reconnect; a server-chosen code
      // (slow consumer, auth, protocol) is worth telling the operator about.
      if (gen === this.gen && ev.code && ![1000, 1001, 1005, 1006].includes(ev.code)) {
        this.opts.onEvent({ kind: 'error', code: `closed_${ev.code}`, message: ev.reason || 'connection closed by server' });
      }
      // 1001: this gateway is shutting down; another one (if any) takes the retry.
      this.onFailure(gen, ev.code === 1001);
    };
    ws.onerror = () => {
      /* onclose always follows; handled there */
    };
  }

  /** After (re)connecting: trades and candles resume from the last seq seen; quotes and book start from fresh snapshots. */
  private resubscribe(): void {
    for (const ch of CHANNELS) {
      const symbols = [...this.subs[ch]];
      if (symbols.length === 0) continue;
      if (resumes(ch)) {
        for (const s of symbols) if (this.lastSeq[ch].has(s)) this.resuming[ch].add(s);
      } else {
        for (const s of symbols) {
          this.lastSeq[ch].delete(s);
          this.epochs[ch].delete(s);
        }
      }
      for (const op of this.opsFor(ch, symbols, resumes(ch))) this.send(op);
    }
  }

  private opsFor(ch: Channel, symbols: string[], resume: boolean): ClientOp[] {
    return subscribeOps(ch, symbols, { lastSeq: this.lastSeq[ch], epochs: this.epochs[ch], startAt: this.startAt[ch] }, resume);
  }

  private send(op: ClientOp): void {
    if (!this.ws || this.phase !== 'live' || (!this.opts.sendSubscribe && op.op !== 'ping')) return;
    try {
      this.ws.send(JSON.stringify(op));
    } catch {
      /* the close handler will reconnect */
    }
  }

  private startHeartbeat(gen: number): void {
    const { heartbeatMs, idleTimeoutMs } = this.opts;
    if (heartbeatMs <= 0) return;
    // Pings as soon as the stream is open and twice more in its first seconds:
    // their pongs set the clock offset the latency figures need without waiting
    // for heartbeats (the first often comes back late, while the page loads).
    this.ping();
    for (const delay of [1000, 2500]) {
      setTimeout(() => {
        if (gen === this.gen) this.ping();
      }, delay);
    }
    this.heartbeat = setInterval(() => {
      if (gen !== this.gen) return;
      if (idleTimeoutMs > 0 && Date.now() - this.lastRx > idleTimeoutMs) {
        // Half-open TCP connections never fire onclose; silence is the only signal.
        this.onFailure(gen);
        return;
      }
      this.ping();
    }, heartbeatMs);
  }

  // ---- SSE --------------------------------------------------------------

  private streamQuery(): string | null {
    // SSE and poll subscribe the cross product of symbols x channels; extra
    // messages are filtered out in handle(), so ask for the unions.
    const symbols = new Set<string>();
    const channels: Channel[] = [];
    for (const ch of CHANNELS) {
      if (this.subs[ch].size === 0) continue;
      channels.push(ch);
      for (const s of this.subs[ch]) symbols.add(s);
    }
    if (symbols.size === 0) return null;
    return `symbols=${[...symbols].map(encodeURIComponent).join(',')}&channels=${channels.join(',')}`;
  }

  /**
   * SSE read with fetch(), which (unlike EventSource) sends the token as
   * `Authorization: Bearer`, so it never goes in the URL. A reconnect sends the
   * last event id as `Last-Event-ID`, as EventSource's own reconnect does, and
   * the server resumes every stream right after it (no snapshot, no gap, no
   * duplicate). Failures go through the same backoff and fallback as the other
   * transports; the server's `retry:` is not used.
   */
  private connectSse(gen: number): void {
    if (!this.fetchFn || typeof TextDecoder === 'undefined') {
      if (!this.fallback()) this.setPhase('closed');
      return;
    }
    const query = this.streamQuery();
    if (query === null) {
      // Nothing to stream yet; subscribe() will restart us.
      this.opened();
      return;
    }
    const resumeFrom = this.sseLastEventId;
    if (resumeFrom) {
      // Trades and candles continue after their last sequence, as on a
      // WebSocket resume (a restarted server answers with epoch_changed).
      for (const ch of CHANNELS) if (resumes(ch)) for (const s of this.subs[ch]) if (this.lastSeq[ch].has(s)) this.resuming[ch].add(s);
    } else {
      // A new stream starts with snapshots, so no book delta may be applied before one.
      this.lastSeq.book.clear();
    }
    const abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this.sseAbort = abort;
    const headers: Record<string, string> = { accept: 'text/event-stream', ...authHeaders(this.opts.token) };
    if (resumeFrom) headers['last-event-id'] = resumeFrom;
    void this.readSse(gen, this.url(`${this.opts.ssePath}?${query}`), { headers, ...(abort ? { signal: abort.signal } : {}) }, resumeFrom);
  }

  private async readSse(gen: number, url: string, init: { signal?: AbortSignal; headers: Record<string, string> }, resumeFrom: string | null): Promise<void> {
    let res: FetchResponseLike;
    try {
      res = await this.fetchFn!(url, init);
    } catch {
      if (gen === this.gen) this.onFailure(gen);
      return;
    }
    if (gen !== this.gen) {
      discard(res);
      return;
    }
    // As EventSource: only a 200 event stream opens.
    if (res.status !== 200 || !isEventStream(res.headers?.get('content-type'))) {
      await this.noteRefusal(gen, res);
      discard(res);
      // A resume point the server cannot read (400 bad_cursor) is not tried again.
      if (res.status === 400 && resumeFrom && this.sseLastEventId === resumeFrom) this.sseLastEventId = null;
      if (gen === this.gen) this.onFailure(gen);
      return;
    }
    const reader = res.body && typeof res.body.getReader === 'function' ? res.body.getReader() : null;
    if (!reader) {
      // This browser cannot stream a response: SSE cannot work here at all.
      if (!this.fallback()) this.onFailure(gen);
      return;
    }
    this.opened();
    const decoder = new TextDecoder();
    const parser = new SseParser((ev) => {
      // Only unnamed events (`message`), as EventSource's onmessage took.
      if (gen === this.gen && ev.type === 'message') this.receiveText(ev.data);
    }, resumeFrom ?? '');
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (gen !== this.gen) break;
        if (done) {
          parser.end();
          break;
        }
        if (value) parser.feed(decoder.decode(value, { stream: true }));
        if (gen !== this.gen) break;
        this.sseLastEventId = parser.lastEventId || null;
      }
    } catch {
      /* the connection failed, or teardown aborted it */
    }
    if (gen === this.gen) {
      // The server ended the stream or the connection dropped: reconnect, resuming.
      this.onFailure(gen);
    } else {
      reader.cancel().catch(() => {});
    }
  }

  /**
   * An SSE or poll request refused for a reason the operator can act on (401:
   * no or a bad token; 403: origin or entitlement; 429: a quota) becomes an
   * error event with the server's code and message, once until the stream is
   * live again rather than on every retry.
   */
  private async noteRefusal(gen: number, res: FetchResponseLike): Promise<void> {
    if (res.status !== 401 && res.status !== 403 && res.status !== 429) return;
    let code = `http_${res.status}`;
    let message = `HTTP ${res.status}`;
    try {
      const body = (await res.json()) as { code?: unknown; message?: unknown } | null;
      if (typeof body?.code === 'string' && body.code) code = body.code;
      if (typeof body?.message === 'string' && body.message) message = body.message;
    } catch {
      /* not JSON */
    }
    const key = `${code}\n${message}`;
    if (gen !== this.gen || key === this.lastRefusal) return;
    this.lastRefusal = key;
    this.opts.onEvent({ kind: 'error', code, message });
  }

  // ---- long-poll --------------------------------------------------------

  private async pollLoop(gen: number): Promise<void> {
    if (!this.fetchFn) {
      this.setPhase('closed');
      return;
    }
    this.lastSeq.book.clear();
    while (gen === this.gen && this.started) {
      const query = this.streamQuery();
      if (query === null) {
        this.opened();
        return;
      }
      const abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
      this.pollAbort = abort;
      const cursor = this.pollCursor ? `&cursor=${encodeURIComponent(this.pollCursor)}` : '';
      let body: { cursor?: string; messages?: unknown[] };
      try {
        const init: { signal?: AbortSignal; headers?: Record<string, string> } = {};
        if (abort) init.signal = abort.signal;
        if (this.opts.token) init.headers = authHeaders(this.opts.token);
        const res = await this.fetchFn(this.url(`${this.opts.pollPath}?${query}${cursor}`), init);
        if (!res.ok) {
          await this.noteRefusal(gen, res);
          throw new Error(`poll HTTP ${res.status}`);
        }
        body = (await res.json()) as typeof body;
      } catch {
        if (gen !== this.gen) return;
        this.pollCursor = null;
        this.onFailure(gen);
        return;
      }
      if (gen !== this.gen) return;
      if (this.phase !== 'live') this.opened();
      if (typeof body.cursor === 'string') this.pollCursor = body.cursor;
      for (const m of body.messages ?? []) {
        if (m && typeof m === 'object') this.handle(m as ServerMsg);
      }
    }
  }

  // ---- message handling (shared by all transports) ----------------------

  private receiveText(text: string): void {
    const msg = parseServerMsg(text);
    if (msg) this.handle(msg);
  }

  /** Exposed for transports; applies sequence rules and emits in-order events. */
  handle(msg: ServerMsg): void {
    const emit = this.opts.onEvent;
    switch (msg.type) {
      case 'snapshot': {
        if (!this.subs[msg.channel]?.has(msg.symbol)) return;
        this.resuming[msg.channel].delete(msg.symbol);
        this.lastSeq[msg.channel].set(msg.symbol, msg.seq);
        // A snapshot restarts the stream's state, in the epoch it names (one
        // from a server without epochs leaves the stream without one).
        if (typeof msg.epoch === 'number') {
          this.epochs[msg.channel].set(msg.symbol, msg.epoch);
          this.learnConnEpoch(msg.epoch);
        } else this.epochs[msg.channel].delete(msg.symbol);
        // A stream started from a time that the server answered with a snapshot (no store) is started.
        this.startAt[msg.channel].delete(msg.symbol);
        if (msg.channel === 'book') this.bookResync.delete(msg.symbol);
        emit({ kind: 'snapshot', msg });
        return;
      }
      case 'batch':
        for (const u of msg.updates ?? []) this.handleUpdate(u);
        return;
      case 'gap': {
        if (!this.subs[msg.channel]?.has(msg.symbol)) return;
        const last = this.lastSeq[msg.channel].get(msg.symbol);
        if (msg.channel === 'book') {
          this.dropBook(msg.symbol, `gap ${msg.from_seq}-${msg.to_seq}`);
        } else if (msg.reason === 'epoch_changed') {
          // Our sequences came from another server run and do not continue
          // here: the fresh snapshot that follows restarts the stream (and
          // brings the new epoch). Until it does, accept whatever comes.
          this.resuming[msg.channel].delete(msg.symbol);
          this.lastSeq[msg.channel].delete(msg.symbol);
          this.epochs[msg.channel].delete(msg.symbol);
        } else if (last === undefined || msg.to_seq > last) {
          // The server has told us about the hole; do not report it twice.
          this.lastSeq[msg.channel].set(msg.symbol, msg.to_seq);
        }
        emit({ kind: 'gap', symbol: msg.symbol, channel: msg.channel, from_seq: msg.from_seq, to_seq: msg.to_seq, reason: msg.reason, origin: 'server' });
        return;
      }
      case 'book_invalidated':
        if (!this.subs.book.has(msg.symbol)) return;
        // The server resynchronises its book and sends a fresh snapshot.
        this.lastSeq.book.delete(msg.symbol);
        emit({ kind: 'book_reset', symbol: msg.symbol, reason: 'invalidated by server' });
        return;
      case 'error': {
        const about = typeof msg.symbol === 'string' && msg.symbol ? { symbol: msg.symbol, channel: msg.channel } : {};
        emit({ kind: 'error', code: msg.code, message: msg.message, ...about });
        if (msg.code === 'bad_since' && about.symbol && about.channel && this.startAt[about.channel]?.delete(about.symbol)) {
          // A refused since_time (no store): the server sends the snapshot itself.
          return;
        }
        if (msg.code === 'bad_since') this.restartResumes(about.symbol, about.channel);
        return;
      }
      case 'pong': {
        const id = msg.id ?? 0;
        const sent = this.pingsInFlight.get(id);
        this.pingsInFlight.delete(id);
        const now = Date.now();
        const serverMs = typeof msg.ts_send === 'number' ? msg.ts_send / 1e6 : null;
        emit({
          kind: 'pong',
          id,
          rttMs: sent === undefined ? null : now - sent,
          clockOffsetMs: sent === undefined || serverMs === null ? null : serverMs - (sent + now) / 2,
        });
        return;
      }
      case 'live': {
        if (!this.subs[msg.channel]?.has(msg.symbol)) return;
        // Stored history has caught up: the live updates that follow are of
        // this epoch (a new one after a server restart), and continue after seq.
        if (typeof msg.epoch === 'number') {
          this.epochs[msg.channel].set(msg.symbol, msg.epoch);
          this.learnConnEpoch(msg.epoch);
        }
        const last = this.lastSeq[msg.channel].get(msg.symbol);
        if (typeof msg.seq === 'number' && (last === undefined || msg.seq > last)) this.lastSeq[msg.channel].set(msg.symbol, msg.seq);
        this.resuming[msg.channel].delete(msg.symbol);
        this.startAt[msg.channel].delete(msg.symbol);
        emit({ kind: 'live', symbol: msg.symbol, channel: msg.channel, seq: msg.seq });
        return;
      }
      case 'replay':
        emit({ kind: 'replay', status: msg });
        return;
      case 'end':
        emit({ kind: 'replay_end', end: msg });
        return;
    }
  }

  /**
   * The server refused a `since` (e.g. it restarted and its sequences are
   * behind ours). The error names the stream (`symbol`, `channel`): that one
   * is subscribed afresh, from a snapshot. From a server that does not name
   * it, every stream still waiting for its first message after the resume is.
   */
  private restartResumes(symbol?: string, channel?: Channel): void {
    const restart: Partial<Record<Channel, string[]>> = {};
    if (symbol !== undefined && channel !== undefined && this.subs[channel]) {
      this.resuming[channel].delete(symbol);
      if (this.subs[channel].has(symbol)) restart[channel] = [symbol];
    } else {
      for (const ch of CHANNELS) {
        const symbols = [...this.resuming[ch]].filter((s) => this.subs[ch].has(s) && (symbol === undefined || s === symbol));
        for (const s of symbols) this.resuming[ch].delete(s);
        if (symbols.length) restart[ch] = symbols;
      }
    }
    for (const ch of CHANNELS) {
      const symbols = restart[ch];
      if (!symbols) continue;
      for (const s of symbols) this.lastSeq[ch].delete(s);
      this.send({ op: 'subscribe', channels: [ch], symbols });
    }
  }

  private handleUpdate(u: Update): void {
    if (!u || !this.subs[u.channel]?.has(u.symbol)) return;
    const seqs = this.lastSeq[u.channel];
    const last = seqs.get(u.symbol);
    if (u.channel === 'book') return this.handleBookUpdate(u, last);
    if (resumes(u.channel) && this.resuming[u.channel].delete(u.symbol) && last !== undefined && u.seq < last) {
      // A resume answered from below what we already had means the
      // sequence restarted (a restarted server): start over rather than drop
      // every update as a duplicate.
      this.opts.onEvent({ kind: 'gap', symbol: u.symbol, channel: u.channel, from_seq: u.seq, to_seq: u.seq, reason: 'sequence_reset', origin: 'client' });
      seqs.set(u.symbol, u.seq);
      this.opts.onEvent({ kind: 'update', update: u });
      return;
    }
    if (last !== undefined) {
      if (u.seq <= last) return; // duplicate, e.g. overlap after a resume
      if (u.seq > last + 1 && u.channel === 'trades') {
        // Trades are never conflated, so a skip is data we did not get.
        this.opts.onEvent({ kind: 'gap', symbol: u.symbol, channel: 'trades', from_seq: last + 1, to_seq: u.seq - 1, reason: 'sequence_skip', origin: 'client' });
      }
      // Quotes and candles skip sequences by design when conflated: just take the newest.
    }
    seqs.set(u.symbol, u.seq);
    this.startAt[u.channel].delete(u.symbol);
    if (!this.epochs[u.channel].has(u.symbol)) {
      if (this.connEpoch !== undefined) this.epochs[u.channel].set(u.symbol, this.connEpoch);
      else this.unEpoched.add(`${u.channel}\n${u.symbol}`);
    }
    this.opts.onEvent({ kind: 'update', update: u });
  }

  /** The first epoch seen on this connection also names the sequences that came on it without one. */
  private learnConnEpoch(epoch: number): void {
    if (this.connEpoch !== undefined) return;
    this.connEpoch = epoch;
    for (const key of this.unEpoched) {
      const [ch, symbol] = key.split('\n') as [Channel, string];
      if (this.lastSeq[ch].has(symbol) && !this.epochs[ch].has(symbol)) this.epochs[ch].set(symbol, epoch);
    }
    this.unEpoched.clear();
  }

  private handleBookUpdate(u: BookUpdate, last: number | undefined): void {
    if (last === undefined) return; // no snapshot yet (or dropped): deltas are meaningless
    if (u.seq <= last) return;
    if (u.seq !== last + 1) {
      this.dropBook(u.symbol, `sequence break: expected ${last + 1}, got ${u.seq}`);
      return;
    }
    this.lastSeq.book.set(u.symbol, u.seq);
    this.opts.onEvent({ kind: 'update', update: u });
  }

  /** Forgets a book and asks for a fresh snapshot. */
  private dropBook(symbol: string, reason: string): void {
    this.lastSeq.book.delete(symbol);
    this.opts.onEvent({ kind: 'book_reset', symbol, reason });
    if (this.bookResync.has(symbol)) return;
    this.bookResync.add(symbol);
    if (this.transport === 'ws') {
      this.send({ op: 'unsubscribe', channels: ['book'], symbols: [symbol] });
      this.send({ op: 'subscribe', channels: ['book'], symbols: [symbol] });
    } else {
      this.scheduleRestart();
    }
  }
}
