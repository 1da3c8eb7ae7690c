// Composition root: wires the stream client, the store and the views.

import './styles.css';
import { api, msToNs, setAccessListener, setApiBase, setApiToken } from './api';
import { keepToken, takeToken, tokenFromAddress } from './auth';
import type { Channel, Instrument } from './protocol';
import type { Interval } from './state/candles';
import { loadPrefs, savePrefs } from './state/prefs';
import { MarketStore } from './state/store';
import { feedIsDown } from './state/staleness';
import { type ConnState, StreamClient, type StreamEvent, type TransportKind } from './stream/client';
import { GatewayList, gatewaysFromSearch, hostPort } from './stream/gateways';
import { type ClockZone, clockZone, setClockZone } from './util/clock';
import { FrameScheduler } from './util/frame';
import { AccessBanner } from './views/access';
import { ChartView } from './views/chart';
import { DepthView } from './views/depth';
import { OperatorView, type ReplayParams } from './views/operator';
import { ReplayBar } from './views/replaybar';
import { StatusBar } from './views/statusbar';
import { TapeView } from './views/tape';
import { WatchlistView } from './views/watchlist';

const DEFAULT_WATCHLIST = 8;
const LIST_CHANNELS: Channel[] = ['quotes', 'trades'];
const SNAPSHOT_REFRESH_MS = 30_000;
/** How often /v1/feeds is read to mark prices of a stale feed. */
const FEEDS_POLL_MS = 2_000;

const $ = (id: string) => document.getElementById(id)!;
/**
 * Access token from `/#token=T` (or `/?token=T` of old links), then kept in
 * sessionStorage and removed from the address bar (see auth.ts). REST, SSE and
 * long-polls send it as a bearer header, WebSockets as a `bearer.` subprotocol.
 */
const token = takeToken(window);
setApiToken(token);
// A `#token=` link opened in this tab again changes only the fragment (no
// load): take the new token and start over with it.
window.addEventListener('hashchange', () => {
  if (tokenFromAddress(location.href).token === null) return;
  takeToken(window);
  location.reload();
});
/**
 * `?gateways=ORIGIN,ORIGIN,…`: gateways of one cluster to stream from and call,
 * one at a time, moving on when one fails (see stream/gateways.ts). Without
 * it, this page's origin alone. The first used is this page's origin when it
 * is listed (it just served the page), else the first listed.
 */
const gateways = new GatewayList(gatewaysFromSearch(location.search, location.origin), location.origin);
/** REST calls go to the gateway the stream uses (relative URLs, as before, with one gateway). */
if (gateways.size > 1) setApiBase(() => gateways.current);

const prefs = loadPrefs();
setClockZone(prefs.clock);
/** `?transport=ws|sse|poll` forces one transport (no fallback). */
const forcedTransport = ((): TransportKind | null => {
  const t = new URLSearchParams(location.search).get('transport');
  return t === 'ws' || t === 'sse' || t === 'poll' ? t : null;
})();
let watchlist: string[] = prefs.watchlist ?? [];
let instruments: Instrument[] = [];
let mode: 'live' | 'replay' = 'live';
let replayClient: StreamClient | null = null;
/** Seeks sent whose status reply has not come back yet. */
let pendingSeeks = 0;
/** The symbol whose book the live stream is subscribed to (survives a replay). */
let liveSelected: string | null = null;
/** The live candle stream the chart follows: the selected symbol at the selected interval. */
let liveCandles: { symbol: string; channel: Channel } | null = null;

const scheduler = new FrameScheduler(renderFrame);
const store = new MarketStore(() => scheduler.request());
store.interval = prefs.interval;

const watchlistView = new WatchlistView(
  $('watchlist'),
  store,
  { onSelect: select, onAdd: addSymbol, onRemove: removeSymbol },
  () => scheduler.request(),
);
const chart = new ChartView($('chart'), store, changeInterval);
const depth = new DepthView($('depth'), store);
const tape = new TapeView($('tape'), store);
const status = new StatusBar($('status'), store);
const operator = new OperatorView($('operator'), store, {
  onReplay: startReplay,
  onStopReplay: () => stopReplay('stopped'),
  defaultSymbols: () => (store.selected ? [store.selected] : watchlist.slice(0, 1)),
});
/** Says when a key is required or refused, or something is not entitled (the server's 401 / 403 and stream errors). */
const access = new AccessBanner(
  {
    onKey: (key) => {
      keepToken(window, key);
      location.reload();
    },
  },
  token !== null,
);
$('replaybar-slot').append(access.root);
setAccessListener({
  refused: (status, code, message) => {
    if (status === 401) access.unauthorized(token ? message : '');
    else if (code === 'not_entitled') access.notEntitled(message);
  },
  ok: () => access.authorized(),
});
/** Stream errors about access: a refused key (SSE and poll answers, WebSocket close codes) or a refused entitlement. */
function noteAccess(e: StreamEvent): void {
  if (e.kind !== 'error') return;
  if (e.code === 'not_entitled') access.notEntitled(e.message);
  else if (e.code === 'closed_4003') access.unauthorized('The key was revoked');
  else if (e.code === 'closed_4001') access.unauthorized('The token expired');
  else if (e.code === 'unauthorized') access.unauthorized(token ? e.message : '');
}

const replayBar = new ReplayBar(store, {
  onPause: () => replayClient?.control({ op: 'pause' }),
  onResume: () => replayClient?.control({ op: 'resume' }),
  onSpeed: (speed) => replayClient?.control({ op: 'speed', speed }),
  onSeek: (atMs) => {
    // Integer ns inside the range; the reply (a status) marks where the new stream starts.
    if (replayClient?.control({ op: 'seek', to: Math.floor(atMs) * 1e6 })) pendingSeeks++;
  },
  onExit: () => stopReplay('stopped'),
});
$('replaybar-slot').append(replayBar.root);

const live = new StreamClient({
  gateways,
  token,
  ...(forcedTransport ? { transports: [forcedTransport] } : {}),
  onEvent: (e) => {
    noteAccess(e);
    store.apply(e);
  },
  onState: (s) => {
    if (mode === 'live') {
      store.setStreamUp(s.phase === 'live');
      status.setConn(s, 'live');
    }
    operator.setGateway(s.gateway, gateways.urls);
    noteConn(s);
  },
});

/** Recent per-frame render durations (ms): read by the e2e load test and handy when profiling. */
const renderTimes = new Float64Array(256);
let renderCount = 0;

function renderFrame(): void {
  const t0 = performance.now();
  paint();
  renderTimes[renderCount++ % renderTimes.length] = performance.now() - t0;
}

function paint(): void {
  // This frame draws what arrived since the last: its latency is taken now.
  store.measureDrawn();
  const d = store.takeDirty();
  watchlistView.render(d.symbols);
  if (d.chartReset || d.bars.length) chart.render(d.chartReset, d.bars);
  if (d.book) depth.render();
  if (d.tape) tape.render();
  if (d.notices) operator.renderNotices();
}

let lastLabel = '';
let wasDown = false;
/** The gateway the live stream was last live on. */
let liveGateway: string | null = null;
/** Said once per outage that every gateway was tried and none answered. */
let warnedUnreachable = false;
/**
 * Connection changes as notices. With several gateways, losing one is
 * expected and recovered by moving to another: the loss is information and
 * the move a recovery; only every gateway failing in turn is a fault.
 */
function noteConn(s: ConnState): void {
  const several = gateways.size > 1;
  if (several && s.phase === 'reconnecting' && !warnedUnreachable && s.attempt > gateways.size) {
    warnedUnreachable = true;
    store.notice('warn', `no gateway reachable (tried ${gateways.urls.map(hostPort).join(', ')}); retrying`);
  }
  if (s.label !== lastLabel) {
    lastLabel = s.label;
    const on = (g: string | null) => (several && g ? ` on gateway ${hostPort(g)}` : '');
    if (s.phase === 'reconnecting') {
      wasDown = true;
      store.notice(several ? 'info' : 'warn', `stream lost${on(liveGateway)}, reconnecting (${s.transport})`);
    } else if (s.phase === 'live' && wasDown) {
      wasDown = false;
      warnedUnreachable = false;
      const moved = several && liveGateway !== null && liveGateway !== s.gateway;
      store.notice('ok', moved ? `stream reconnected${on(s.gateway)}, moved from ${hostPort(liveGateway!)} (${s.transport})` : `stream reconnected (${s.transport})`);
    } else {
      store.notice('info', `stream ${s.label}${s.phase === 'live' ? on(s.gateway) : ''} (${s.transport})`);
    }
  }
  if (s.phase === 'live') liveGateway = s.gateway;
}

/** Every view redraws its times in the new zone. */
function changeClock(z: ClockZone): void {
  const prev = clockZone();
  if (z === prev) return;
  setClockZone(z);
  for (const b of document.querySelectorAll<HTMLButtonElement>('[data-clock]')) b.setAttribute('aria-checked', String(b.dataset.clock === z));
  tape.redraw();
  depth.render();
  chart.applyClock();
  operator.applyClock(prev);
  operator.renderNotices();
  status.render();
  replayBar.render();
  persist();
}

for (const b of document.querySelectorAll<HTMLButtonElement>('[data-clock]')) {
  b.setAttribute('aria-checked', String(b.dataset.clock === clockZone()));
  b.addEventListener('click', () => changeClock(b.dataset.clock as ClockZone));
}

function persist(): void {
  if (mode === 'replay') {
    // Replay borrows the widgets (its symbols are not the user's choice); the clock setting is.
    savePrefs({ ...loadPrefs(), clock: clockZone() });
    return;
  }
  savePrefs({ watchlist, selected: store.selected, interval: store.interval, clock: clockZone() });
}

// ---- user actions --------------------------------------------------------

function select(symbol: string): void {
  if (symbol === store.selected) return;
  if (mode === 'live') {
    if (liveSelected) live.unsubscribe(['book'], [liveSelected]);
    live.subscribe(['book'], [symbol]);
    liveSelected = symbol;
  }
  store.select(symbol);
  watchlistView.setSelected(symbol);
  syncCandles();
  persist();
  loadChart();
}

function changeInterval(interval: Interval): void {
  store.setInterval(interval);
  syncCandles();
  persist();
  loadChart();
}


/**
 * Keeps the live stream subscribed to exactly one candle channel: the selected
 * symbol's, at the selected interval (none in replay, which has no candles).
 * The subscription's snapshot brings the current candle; history comes from REST.
 */
function syncCandles(): void {
  const want = mode === 'live' && store.selected ? { symbol: store.selected, channel: store.candleChannel } : null;
  if (want && liveCandles && want.symbol === liveCandles.symbol && want.channel === liveCandles.channel) return;
  if (liveCandles) live.unsubscribe([liveCandles.channel], [liveCandles.symbol]);
  if (want) live.subscribe([want.channel], [want.symbol]);
  liveCandles = want;
}

/** The chart's latest history load (resolved once its bars are in the store). */
let chartLoad: Promise<void> = Promise.resolve();

function loadChart(): void {
  if (mode === 'replay') {
    chart.resetView();
    chart.setNote('replay · bars from replayed trades');
    return;
  }
  chartLoad = chart.loadHistory().then(() => scheduler.request());
}

/** How long the first stream waits for the chart's history before starting without it. */
const HISTORY_WAIT_MS = 3_000;

/**
 * After a page load the chart has REST history up to its last candle, then
 * follows the live stream, which starts later: trades in between would be
 * missing from the tape, and a candle that closed in between would keep the
 * value REST read. So, once history has loaded, the selected symbol's trades
 * start from stored history at the last history candle's start (or the REST
 * read time when there was none): `since_time`, then the server's `live`
 * marker, then live trades, with no gap and no duplicate (the stream client
 * drops any sequence it already has). Those trades fill the tape and rebuild
 * the chart's buckets from that time up to the first live candle (see
 * CandleBuilder.fillFrom). A server without a store refuses `since_time`
 * (bad_since) and sends the usual snapshot instead.
 */
async function startFromHistory(symbol: string | undefined): Promise<void> {
  if (!symbol) return;
  await Promise.race([chartLoad, new Promise((r) => setTimeout(r, HISTORY_WAIT_MS))]);
  const end = chart.historyEnd;
  if (!end || end.symbol !== symbol || store.selected !== symbol || end.interval !== store.interval) return;
  live.startFrom('trades', symbol, end.atMs);
  store.candles.fillFrom(end.atMs);
}

function addSymbol(symbol: string): void {
  if (watchlist.includes(symbol) || mode === 'replay') return;
  watchlist = [...watchlist, symbol];
  store.track(symbol);
  watchlistView.setSymbols(watchlist);
  live.subscribe(LIST_CHANNELS, [symbol]);
  void refreshStats([symbol]);
  persist();
  if (!store.selected) select(symbol);
}

function removeSymbol(symbol: string): void {
  if (mode === 'replay') return;
  watchlist = watchlist.filter((s) => s !== symbol);
  live.unsubscribe([...LIST_CHANNELS, 'book'], [symbol]);
  if (liveSelected === symbol) liveSelected = null;
  store.untrack(symbol);
  watchlistView.setSymbols(watchlist);
  if (store.selected === symbol) {
    store.select(null);
    if (watchlist[0]) select(watchlist[0]);
    else {
      syncCandles();
      loadChart();
    }
  }
  persist();
}

/** Session open and volume come from REST; the stream only carries trades. */
async function refreshStats(symbols: string[]): Promise<void> {
  if (!symbols.length || mode === 'replay') return;
  const res = await api.snapshot(symbols);
  if (res.ok && Array.isArray(res.data.snapshots)) store.applyRestSnapshot(res.data.snapshots);
}

// ---- replay --------------------------------------------------------------

function startReplay(p: ReplayParams): void {
  replayClient?.stop();
  mode = 'replay';
  live.stop();
  syncCandles();
  store.replay = true;
  for (const s of p.symbols) store.track(s);
  watchlistView.setSymbols(p.symbols);
  store.clearData();
  store.select(p.symbols.includes(store.selected ?? '') ? store.selected : p.symbols[0]);
  watchlistView.setSelected(store.selected);
  loadChart();
  setText('mode', 'REPLAY');
  document.body.classList.add('replaying');
  pendingSeeks = 0;
  store.replayInfo = { state: 'connecting', speed: String(p.speed), fromMs: p.fromMs, toMs: p.toMs, atMs: p.fromMs };
  depth.replayNote = p.channels.includes('book') ? 'waiting for the replayed book…' : 'book not replayed';
  replayBar.show(true, p.speed);
  replayBar.render();

  const q = new URLSearchParams({
    symbols: p.symbols.join(','),
    channels: p.channels.join(','),
    from: msToNs(p.fromMs).toString(),
    to: msToNs(p.toMs).toString(),
    speed: String(p.speed),
  });
  let opened = false;
  const client = new StreamClient({
    baseUrl: gateways.current,
    token,
    wsPath: `/v1/replay?${q.toString().replace(/%2C/g, ',')}`,
    transports: ['ws'],
    reconnect: false,
    sendSubscribe: false,
    heartbeatMs: 0,
    onEvent: (e) => {
      noteAccess(e);
      onReplayEvent(client, e);
    },
    onState: (s) => {
      if (client !== replayClient) return;
      if (s.phase === 'live') {
        opened = true;
        operator.setReplayState(true, 'playing…');
      } else if (s.phase === 'closed') {
        // A finished replay stays on screen until "Back to live"; one that never
        // connected (no /v1/replay on this server) goes straight back to live.
        if (!opened) {
          stopReplay('replay not available');
          return;
        }
        const ended = store.replayInfo?.state === 'ended';
        if (!ended && store.replayInfo) store.replayInfo.state = 'failed';
        operator.setReplayState(true, ended ? 'finished' : 'connection lost before the end');
      }
      status.setConn(s, 'replay');
      replayBar.render();
    },
  });
  // The URL selects the data; these subscriptions only filter what is accepted.
  client.subscribe(p.channels as Channel[], p.symbols);
  replayClient = client;
  operator.setReplayState(true, 'connecting…');
  client.start();
}

function onReplayEvent(client: StreamClient, e: StreamEvent): void {
  if (client !== replayClient) return;
  if (e.kind === 'replay' && pendingSeeks > 0) {
    // The answer to a seek: what follows starts over from the new position.
    pendingSeeks--;
    client.resetSequences();
    store.clearReplayData();
  }
  store.apply(e);
  if (e.kind === 'replay' || e.kind === 'replay_end') {
    const info = store.replayInfo;
    if (info) operator.setReplayState(true, info.state === 'ended' ? 'finished' : info.state === 'paused' ? 'paused' : `playing ${info.speed}×`);
    status.render();
    replayBar.render();
  }
}

function stopReplay(text: string): void {
  if (mode !== 'replay') return;
  const client = replayClient;
  replayClient = null;
  client?.stop();
  mode = 'live';
  store.replay = false;
  store.replayInfo = null;
  depth.replayNote = null;
  replayBar.show(false);
  document.body.classList.remove('replaying');
  setText('mode', '');
  for (const s of [...store.symbols.keys()]) if (!watchlist.includes(s)) store.untrack(s);
  for (const s of watchlist) store.track(s);
  watchlistView.setSymbols(watchlist);
  store.clearData();
  const sel = liveSelected && watchlist.includes(liveSelected) ? liveSelected : (watchlist[0] ?? null);
  if (liveSelected && liveSelected !== sel) live.unsubscribe(['book'], [liveSelected]);
  if (sel) live.subscribe(['book'], [sel]);
  liveSelected = sel;
  store.select(sel);
  watchlistView.setSelected(sel);
  syncCandles();
  operator.setReplayState(false, text);
  status.setConn(live.state, 'live');
  live.start();
  void refreshStats(watchlist);
  loadChart();
}

function setText(id: string, text: string): void {
  $(id).textContent = text;
}

// ---- tabs ------------------------------------------------------------------

const tabs = [...document.querySelectorAll<HTMLButtonElement>('.tab')];
function showTab(tab: HTMLButtonElement): void {
  const name = tab.dataset.tab;
  for (const t of tabs) {
    const on = t === tab;
    t.classList.toggle('active', on);
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
  }
  $('markets').hidden = name !== 'markets';
  $('operator').hidden = name !== 'operator';
  operator.show(name === 'operator');
}
for (const tab of tabs) {
  tab.addEventListener('click', () => showTab(tab));
  // Arrow keys move between tabs (and show them), Home/End jump: one tab stop for the tab list.
  tab.addEventListener('keydown', (ev) => {
    const i = tabs.indexOf(tab);
    const to =
      ev.key === 'ArrowRight' ? tabs[(i + 1) % tabs.length] : ev.key === 'ArrowLeft' ? tabs[(i + tabs.length - 1) % tabs.length] : ev.key === 'Home' ? tabs[0] : ev.key === 'End' ? tabs[tabs.length - 1] : null;
    if (!to) return;
    ev.preventDefault();
    showTab(to);
    to.focus();
  });
}

// ---- staleness -------------------------------------------------------------

/** Feed health decides which prices are stale even while the stream is up. */
const feedStates = new Map<string, string>();
async function pollFeeds(): Promise<void> {
  const res = await api.feeds();
  if (!res.ok || !Array.isArray(res.data.feeds)) return; // unknown: no marks either way
  store.feedsDown.clear();
  const venues = new Set([...store.instruments.values()].map((i) => i.venue ?? ''));
  for (const f of res.data.feeds) {
    const down = feedIsDown(f);
    const prev = feedStates.get(f.name);
    const label = down ? (f.state === 'live' ? 'silent' : f.state) : 'live';
    if (prev !== undefined && prev !== label) store.notice(down ? 'warn' : 'ok', `feed ${f.name} ${down ? `is ${label}` : 'is live again'}`);
    feedStates.set(f.name, label);
    if (!down) continue;
    // Feeds are named by venue ("binance"); the simulator's venue is "sim".
    const venue = [...venues].find((v) => v && (f.name.startsWith(v) || v.startsWith(f.name)));
    store.feedsDown.add(venue ?? '*');
  }
}

function renderStale(): void {
  const now = Date.now();
  watchlistView.renderStale(now);
  depth.renderStale(now);
  tape.renderStale(now);
  if (mode === 'replay') replayBar.render();
}

// ---- start -----------------------------------------------------------------

async function loadInstruments(): Promise<void> {
  for (let delay = 1_000; ; delay = Math.min(delay * 2, 10_000)) {
    const res = await api.instruments();
    if (res.ok && Array.isArray(res.data.instruments)) {
      instruments = res.data.instruments;
      return;
    }
    const hint = !res.ok && res.status === 401 ? (token ? ': the token was refused' : ': a key is required, open the dashboard as /#token=…') : '';
    // A gateway that cannot be reached: the next try (and the stream) goes to the next one.
    const unreachable = !res.ok && res.status === 0 && gateways.size > 1;
    const from = gateways.size > 1 ? ` from ${hostPort(gateways.current)}` : '';
    if (unreachable) gateways.advance();
    store.notice('warn', `instruments unavailable${from} (${res.ok ? 'bad body' : res.message}${hint}); retrying${unreachable ? ` on ${hostPort(gateways.current)}` : ''}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

async function boot(): Promise<void> {
  status.setGateways(gateways.urls);
  operator.setGateway(live.gateway, gateways.urls);
  status.setConn(live.state, 'live');
  setInterval(() => {
    status.render();
    renderStale();
  }, 250);
  setInterval(() => void pollFeeds(), FEEDS_POLL_MS);
  await loadInstruments();
  store.setInstruments(instruments);
  watchlistView.setInstruments(instruments);
  const known = new Set(instruments.map((i) => i.symbol));
  // Drop remembered symbols the server no longer lists, so subscribe gets no unknown_symbol.
  watchlist = (prefs.watchlist ?? instruments.slice(0, DEFAULT_WATCHLIST).map((i) => i.symbol)).filter((s) => known.has(s));
  for (const s of watchlist) store.track(s);
  watchlistView.setSymbols(watchlist);
  live.subscribe(LIST_CHANNELS, watchlist);
  const first = prefs.selected && watchlist.includes(prefs.selected) ? prefs.selected : watchlist[0];
  if (first) select(first);
  else loadChart();
  await startFromHistory(first);
  live.start();
  persist();
  void refreshStats(watchlist);
  setInterval(() => void refreshStats(watchlist), SNAPSHOT_REFRESH_MS);
}

// Hook for the e2e suite and for debugging from the console.
(window as unknown as { __tickwire: unknown }).__tickwire = {
  store,
  get client() {
    return replayClient ?? live;
  },
  chart,
  watchlist: watchlistView,
  renderTimes: () => Array.from(renderTimes.subarray(0, Math.min(renderCount, renderTimes.length))),
  gateways,
  summary: () => ({
    conn: (replayClient ?? live).state.label,
    transport: (replayClient ?? live).state.transport,
    gateway: (replayClient ?? live).state.gateway,
    bars: chart.barCount,
    lastBar: chart.lastBar,
    lastCandle: store.lastCandle,
    candleChannel: liveCandles ? `${liveCandles.symbol} ${liveCandles.channel}` : null,
    symbols: [...store.symbols.keys()],
    selected: store.selected,
    bookLevels: store.book.bids.size + store.book.asks.size,
    bookSeq: store.book.seq,
    bookStatus: store.bookStatus,
    tape: store.tape.length,
    lastTradeMs: store.tape[0]?.tsMs ?? null,
  }),
};

void boot();
