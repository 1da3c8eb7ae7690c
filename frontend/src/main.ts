// Composition root: wires the stream client, the store and the views.

import './styles.css';
import { api, msToNs, setApiToken } from './api';
import { tokenFromSearch } from './auth';
import type { Channel, Instrument } from './protocol';
import type { Interval } from './state/candles';
import { loadPrefs, savePrefs } from './state/prefs';
import { MarketStore } from './state/store';
import { type ConnState, StreamClient } from './stream/client';
import { FrameScheduler } from './util/frame';
import { ChartView } from './views/chart';
import { DepthView } from './views/depth';
import { OperatorView, type ReplayParams } from './views/operator';
import { StatusBar } from './views/statusbar';
import { TapeView } from './views/tape';
import { WatchlistView } from './views/watchlist';

const DEFAULT_WATCHLIST = 8;
const LIST_CHANNELS: Channel[] = ['quotes', 'trades'];
const SNAPSHOT_REFRESH_MS = 30_000;

const $ = (id: string) => document.getElementById(id)!;
const baseUrl = location.origin;
/** Access token from `/?token=T`: REST sends it as a bearer header, streams as `?token=`. */
const token = tokenFromSearch(location.search);
setApiToken(token);

const prefs = loadPrefs();
let watchlist: string[] = prefs.watchlist ?? [];
let instruments: Instrument[] = [];
let mode: 'live' | 'replay' = 'live';
let replayClient: StreamClient | null = null;
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

const live = new StreamClient({
  baseUrl,
  token,
  onEvent: (e) => store.apply(e),
  onState: (s) => {
    if (mode === 'live') status.setConn(s, 'live');
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
  const d = store.takeDirty();
  watchlistView.render(d.symbols);
  if (d.chartReset || d.bars.length) chart.render(d.chartReset, d.bars);
  if (d.book) depth.render();
  if (d.tape) tape.render();
  if (d.notices) operator.renderNotices();
}

let lastLabel = '';
function noteConn(s: ConnState): void {
  if (s.label === lastLabel) return;
  lastLabel = s.label;
  store.notice(s.label === 'reconnecting' ? 'warn' : 'info', `stream ${s.label} (${s.transport})`);
}

function persist(): void {
  if (mode === 'replay') return; // replay borrows the widgets; it is not the user's choice
  savePrefs({ watchlist, selected: store.selected, interval: store.interval });
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

function loadChart(): void {
  if (mode === 'replay') {
    chart.setNote('replay · candles from replayed trades');
    return;
  }
  void chart.loadHistory().then(() => scheduler.request());
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
  setText('mode', `REPLAY ${p.speed}×`);

  const q = new URLSearchParams({
    symbols: p.symbols.join(','),
    channels: p.channels.join(','),
    from: msToNs(p.fromMs).toString(),
    to: msToNs(p.toMs).toString(),
    speed: String(p.speed),
  });
  let opened = false;
  const client = new StreamClient({
    baseUrl,
    token,
    wsPath: `/v1/replay?${q.toString().replace(/%2C/g, ',')}`,
    transports: ['ws'],
    reconnect: false,
    sendSubscribe: false,
    heartbeatMs: 0,
    onEvent: (e) => store.apply(e),
    onState: (s) => {
      if (client !== replayClient) return;
      status.setConn(s, 'replay');
      if (s.phase === 'live') {
        opened = true;
        operator.setReplayState(true, 'playing…');
      } else if (s.phase === 'closed') {
        // A finished replay stays on screen until "Back to live"; one that never
        // connected (no /v1/replay on this server) goes straight back to live.
        if (opened) operator.setReplayState(true, 'finished');
        else stopReplay('replay not available');
      }
    },
  });
  // The URL selects the data; these subscriptions only filter what is accepted.
  client.subscribe(p.channels as Channel[], p.symbols);
  replayClient = client;
  operator.setReplayState(true, 'connecting…');
  client.start();
}

function stopReplay(text: string): void {
  if (mode !== 'replay') return;
  const client = replayClient;
  replayClient = null;
  client?.stop();
  mode = 'live';
  store.replay = false;
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
  live.start();
  void refreshStats(watchlist);
  loadChart();
}

function setText(id: string, text: string): void {
  $(id).textContent = text;
}

// ---- tabs ------------------------------------------------------------------

for (const tab of document.querySelectorAll<HTMLButtonElement>('.tab')) {
  tab.addEventListener('click', () => {
    const name = tab.dataset.tab;
    for (const t of document.querySelectorAll<HTMLElement>('.tab')) t.classList.toggle('active', t === tab);
    $('markets').hidden = name !== 'markets';
    $('operator').hidden = name !== 'operator';
    operator.show(name === 'operator');
  });
}

// ---- start -----------------------------------------------------------------

async function loadInstruments(): Promise<void> {
  for (let delay = 1_000; ; delay = Math.min(delay * 2, 10_000)) {
    const res = await api.instruments();
    if (res.ok && Array.isArray(res.data.instruments)) {
      instruments = res.data.instruments;
      return;
    }
    const hint = !res.ok && res.status === 401 ? (token ? ': the token was refused' : ': open the dashboard as /?token=…') : '';
    store.notice('warn', `instruments unavailable (${res.ok ? 'bad body' : res.message}${hint}); retrying`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

async function boot(): Promise<void> {
  status.setConn(live.state, 'live');
  setInterval(() => status.render(), 250);
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
  summary: () => ({
    conn: (replayClient ?? live).state.label,
    transport: (replayClient ?? live).state.transport,
    bars: chart.barCount,
    lastBar: chart.lastBar,
    lastCandle: store.lastCandle,
    candleChannel: liveCandles ? `${liveCandles.symbol} ${liveCandles.channel}` : null,
    symbols: [...store.symbols.keys()],
    selected: store.selected,
    bookLevels: store.book.bids.size + store.book.asks.size,
    tape: store.tape.length,
    lastTradeMs: store.tape[0]?.tsMs ?? null,
  }),
};

void boot();
