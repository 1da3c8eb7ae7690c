#!/usr/bin/env node
// End-to-end suite: starts the real tickwire server on a free loopback port,
// drives Debian's Chromium through playwright-core, and checks the dashboard.
//
//   TICKWIRE_BIN   server binary (default ../target/debug/tickwire)
//   CHROMIUM       browser binary (default /usr/bin/chromium)
//   E2E_ONLY       comma-separated test names to run (default: all)
//
// Screenshots and the server log go to frontend/test-results/. Exits non-zero
// on any failure; the server is always killed.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const FRONTEND = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(FRONTEND, 'dist');
const RESULTS = join(FRONTEND, 'test-results');
const BIN = resolve(FRONTEND, process.env.TICKWIRE_BIN ?? '../target/debug/tickwire');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ONLY = process.env.E2E_ONLY ? new Set(process.env.E2E_ONLY.split(',')) : null;
const SUITE_TIMEOUT_MS = 240_000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Fresh results each run, so a stale failure screenshot never misleads.
rmSync(RESULTS, { recursive: true, force: true });
mkdirSync(RESULTS, { recursive: true });
const log = (...a) => console.log(...a);

// ---- server process ------------------------------------------------------

let server = null;
let port = 0;

async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Spawns a server on `atPort` with the suite's defaults (no history unless `extra` names a --store). */
function spawnServer(atPort, extra = [], logName = 'server.log') {
  const out = openSync(join(RESULTS, logName), 'a');
  const store = extra.includes('--store') ? [] : ['--store', 'none'];
  const args = ['serve', '--listen', `127.0.0.1:${atPort}`, '--static-dir', DIST, '--rate', '1000', ...store, ...extra];
  const p = spawn(BIN, args, { stdio: ['ignore', out, out] });
  extraServers.add(p);
  p.on('exit', () => extraServers.delete(p));
  return p;
}
/** Every server process still running, so that the exit handler can kill them all. */
const extraServers = new Set();

function startServer() {
  server = spawnServer(port);
  server.on('exit', (code, sig) => {
    if (server && server.exitCode !== null) log(`  (server exited: code=${code} signal=${sig})`);
  });
  return waitHealthy();
}

async function waitHealthy(timeoutMs = 30_000, proc = server, atPort = port, logName = 'server.log') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`server exited with code ${proc.exitCode} (see test-results/${logName})`);
    try {
      const res = await fetch(`http://127.0.0.1:${atPort}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (res.status === 200) return;
    } catch {
      /* not up yet */
    }
    await sleep(150);
  }
  throw new Error('server did not answer /healthz with 200 in time');
}

async function stopServer(signal = 'SIGTERM', p = server) {
  if (p === server) server = null;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill(signal);
  const done = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
  if (!done) {
    p.kill('SIGKILL');
    await exited;
  }
}

function killServerSync() {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  for (const p of extraServers) if (p.exitCode === null) p.kill('SIGKILL');
}
process.on('exit', killServerSync);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// ---- browser -------------------------------------------------------------

const contexts = [];
const EXPECTED_CONSOLE = /Failed to load resource|WebSocket connection to .* failed|EventSource|net::ERR_/;

async function newPage({ disableWebSocket = false, disableEventSource = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tickwire-e2e-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 860 },
  });
  contexts.push({ ctx, dir });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.tw = { ctx, dir };
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('console', (m) => {
    // Network failures are expected here (server restarts, missing endpoints); script errors are not.
    if (m.type() === 'error' && !EXPECTED_CONSOLE.test(m.text())) page.errors.push(`console: ${m.text()}`);
  });
  if (disableWebSocket || disableEventSource) {
    await page.addInitScript(
      ([ws, es]) => {
        if (ws) delete window.WebSocket;
        if (es) delete window.EventSource;
      },
      [disableWebSocket, disableEventSource],
    );
  }
  page.setDefaultTimeout(15_000);
  state.current = page;
  return page;
}

/** Each page is its own browser process: close what a test no longer needs (two shared cores). */
async function closePage(page) {
  const i = contexts.findIndex((c) => c.ctx === page.tw.ctx);
  if (i >= 0) contexts.splice(i, 1);
  await page.tw.ctx.close().catch(() => {});
  rmSync(page.tw.dir, { recursive: true, force: true });
}

async function closeBrowsers() {
  for (const { ctx, dir } of contexts.splice(0)) {
    await ctx.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- helpers -------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const url = () => `http://127.0.0.1:${port}/`;
const summary = (page) => page.evaluate(() => window.__tickwire.summary());
const shot = (page, name) => page.screenshot({ path: join(RESULTS, `${name}.png`) });

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Polls fn until it returns a truthy value; returns it, or throws with the last value seen. */
async function until(what, fn, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** Text of every watchlist cell, one string per row. */
const watchlistText = (page) =>
  page.$$eval('[data-testid=watchlist-row]', (rows) => rows.map((r) => [...r.querySelectorAll('td')].slice(0, 7).map((td) => td.textContent).join(' ')));

async function watchlistUpdates(page, what) {
  const before = await watchlistText(page);
  await until(what, async () => {
    const now = await watchlistText(page);
    return now.length > 0 && now.some((row, i) => row !== before[i]);
  });
}

const connState = (page) => page.getAttribute('[data-testid=conn-state]', 'data-state');

// ---- tests ---------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const state = {};

/** The shared live page; tests run alone (E2E_ONLY) open it themselves. */
async function livePage() {
  if (state.page) state.current = state.page;
  else {
    state.page = await newPage();
    await state.page.goto(url());
  }
  return state.page;
}

test('watchlist fills and updates', async () => {
  const page = await livePage();
  await until('status live', async () => (await connState(page)) === 'live');
  const rows = await until('8 watchlist rows with prices', async () => {
    const r = await watchlistText(page);
    return r.length >= 8 && r.every((t) => !/^\S+ —/.test(t)) && r;
  });
  assert(rows.length === 8, `default watchlist should have 8 symbols, has ${rows.length}`);
  await watchlistUpdates(page, 'a watchlist value to change');
  // Every price shows whole (BTC's 8 digits included), not cut to an ellipsis,
  // down to a 1280-pixel-wide laptop screen.
  for (const width of [1440, 1280]) {
    await page.setViewportSize({ width, height: 860 });
    await page.waitForTimeout(100);
    const cut = await page.$$eval('[data-testid=watchlist-row] td.num', (cells) =>
      cells.filter((td) => td.scrollWidth > td.clientWidth).map((td) => td.textContent));
    assert(cut.length === 0, `at ${width} px, watchlist cells cut short: ${cut.join(', ')}`);
  }
  await page.setViewportSize({ width: 1440, height: 860 });
  await until('a price flash', () => page.$('[class*=flash-]'));
  await until('latency in the status bar', async () => /\d/.test((await page.textContent('[data-testid=latency]')) ?? ''));
  // The first pong (sent as the stream opens) sets the browser's clock to the server's.
  await until('the clock offset from a ping round trip', async () =>
    /corrected to the server's clock by [+−]\d/.test((await page.getAttribute('[data-testid=latency]', 'title')) ?? ''));
  await until('msg/s above zero', async () => Number(await page.textContent('[data-testid=msg-rate]')) > 0);
});

test('chart draws candles, depth and tape fill', async () => {
  const page = await livePage();
  await page.click('[data-interval="1s"]');
  const bars = await until('at least 3 one-second candles', async () => {
    const n = Number(await page.getAttribute('[data-testid=chart]', 'data-bars'));
    return n >= 3 && n;
  });
  assert((await page.$$('[data-testid=chart] canvas')).length > 0, 'chart has no canvas');
  log(`    ${bars} bars drawn; note: "${(await page.textContent('[data-testid=chart-note]')) || '-'}"`);
  // The bars come from the live candles.1s channel of the selected symbol, not from trades.
  const s = await summary(page);
  assert(s.candleChannel === `${s.selected} candles.1s`, `candle subscription: ${s.candleChannel}`);
  const subscribed = await page.evaluate(() => ({
    s1: window.__tickwire.client.subscribed('candles.1s'),
    m1: window.__tickwire.client.subscribed('candles.1m'),
  }));
  assert(JSON.stringify(subscribed) === JSON.stringify({ s1: [s.selected], m1: [] }), `subscribed: ${JSON.stringify(subscribed)}`);
  // The chart's last bar is the last live candle received, value for value.
  await until('the drawn last bar to equal the last live candle', async () => {
    const { lastBar: b, lastCandle: c } = await summary(page);
    return b && c && b.time === Math.round(c.start / 1e9) &&
      [b.open, b.high, b.low, b.close, b.volume].join() === [c.open, c.high, c.low, c.close, c.volume].map(Number).join();
  });
  // ...and it moves live: the last bar's value changes, and new bars are appended.
  const first = (await summary(page)).lastBar;
  await until('the last bar to update live', async () => {
    const b = (await summary(page)).lastBar;
    return b && (b.time !== first.time || b.close !== first.close || b.volume !== first.volume);
  });
  await until('a newer bar to be appended', async () => (await summary(page)).lastBar?.time > first.time, 10_000);
  // Switching the interval moves the subscription to that channel.
  await page.click('[data-interval="1m"]');
  await until('the 1m candle channel', async () => {
    const sub = await page.evaluate(() => [window.__tickwire.client.subscribed('candles.1s').length, window.__tickwire.client.subscribed('candles.1m').length]);
    return sub[0] === 0 && sub[1] === 1 && (await summary(page)).lastBar?.time % 60 === 0;
  });
  await page.click('[data-interval="1s"]');
  await until('1 s bars again', async () => Number(await page.getAttribute('[data-testid=chart]', 'data-bars')) >= 1);
  await until('depth levels', async () => (await summary(page)).bookLevels > 4);
  await until('trades in the tape', async () => (await summary(page)).tape > 0);
  await shot(page, 'markets');
});

test('search adds a symbol, kept across reload, and removes it', async () => {
  const page = await livePage();
  const instruments = await (await fetch(`${url()}v1/instruments`)).json();
  const listed = new Set((await summary(page)).symbols);
  const extra = instruments.instruments.map((i) => i.symbol).find((s) => !listed.has(s));
  assert(extra, 'no instrument outside the default watchlist');
  await page.fill('[data-testid=symbol-search]', extra);
  await until('search result', () => page.$(`[data-testid=search-results] li[data-symbol="${extra}"]`));
  await page.press('[data-testid=symbol-search]', 'Enter');
  await until(`${extra} row with a price`, async () => {
    const t = await page.textContent(`tr[data-symbol="${extra}"] td.bid`).catch(() => null);
    return t && t !== '—';
  });
  await page.reload();
  await until(`${extra} still listed after reload`, () => page.$(`tr[data-symbol="${extra}"]`));
  await until('status live after reload', async () => (await connState(page)) === 'live');
  await page.hover(`tr[data-symbol="${extra}"]`);
  await page.click(`tr[data-symbol="${extra}"] td.remove`);
  await until(`${extra} removed`, async () => !(await page.$(`tr[data-symbol="${extra}"]`)));
  await page.reload();
  await until('watchlist after reload', async () => (await watchlistText(page)).length >= 8);
  assert(!(await page.$(`tr[data-symbol="${extra}"]`)), `${extra} came back after reload`);
});

test('operator view shows feeds and stats', async () => {
  const page = await livePage();
  await page.click('[data-testid=tab-operator]');
  await until('feeds table or a not-available note', async () => {
    const rows = await page.$$('[data-testid=feeds] tbody tr');
    const note = await page.textContent('[data-testid=feeds-note]');
    return rows.length > 0 || /not available/.test(note ?? '');
  });
  await until('connections stat', async () => (await page.textContent('[data-testid=stat-connections]')) !== '—');
  await shot(page, 'operator');
  await page.click('[data-testid=tab-markets]');
});

test('replay panel plays or degrades gracefully, then returns to live', async () => {
  const page = await livePage();
  await page.click('[data-testid=tab-operator]');
  await page.selectOption('[data-testid=replay-speed]', '60');
  await page.click('[data-testid=replay-start]');
  const text = await until('a replay outcome', async () => {
    const t = await page.textContent('[data-testid=replay-status]');
    return /playing|finished|not available/.test(t ?? '') && t;
  });
  log(`    replay: ${text}`);
  await shot(page, 'replay');
  if (!(await page.isDisabled('[data-testid=replay-stop]'))) await page.click('[data-testid=replay-stop]');
  await page.click('[data-testid=tab-markets]');
  await until('status live after replay', async () => (await connState(page)) === 'live');
  await watchlistUpdates(page, 'live prices after replay');
});

test('resumes after a dropped connection without losing trades', async () => {
  const page = await livePage();
  await until('status live', async () => (await connState(page)) === 'live');
  const before = await page.evaluate(() => window.__tickwire.store.notices.length);
  await page.evaluate(() => window.__tickwire.client.dropConnection());
  const droppedAt = Date.now();
  await until('status live again', async () => (await connState(page)) === 'live', 15_000);
  await until('a trade after the drop', async () => (await summary(page)).lastTradeMs > droppedAt);
  await sleep(1_000);
  // The server's ring should fill the hole; a client-detected skip means trades were lost.
  const notices = await page.evaluate((n) => window.__tickwire.store.notices.slice(0, -n || undefined).map((x) => x.text), before);
  const lost = notices.filter((t) => /sequence_skip/.test(t));
  assert(lost.length === 0, `trades lost across the resume: ${lost.join('; ')}`);
  const gaps = notices.filter((t) => /^gap /.test(t));
  if (gaps.length) log(`    server gaps: ${gaps.join('; ')}`);
});

test('reconnects by itself after a server restart', async () => {
  const page = await livePage();
  await until('status live', async () => (await connState(page)) === 'live');
  await stopServer('SIGKILL');
  await until('status to leave live', async () => (await connState(page)) !== 'live', 10_000);
  log(`    status while down: ${await connState(page)}`);
  await sleep(1_500); // let it fail a few reconnect attempts
  await startServer();
  const restartedAt = Date.now();
  await until('status live again', async () => (await connState(page)) === 'live', 20_000);
  await watchlistUpdates(page, 'prices to update after the restart');
  // Trades resume too (the new server's sequences start over; the client must not drop them).
  await until('a trade after the restart', async () => (await summary(page)).lastTradeMs > restartedAt - 1_000);
  const s = await summary(page);
  assert(s.transport === 'ws', `expected to stay on WebSocket, got ${s.transport}`);
  await shot(page, 'after-restart');
});

test('streams over SSE when WebSocket is unavailable', async () => {
  // Fail fast and clearly when the server build has no SSE endpoint at all.
  const probe = await fetch(`${url()}v1/sse?symbols=BTC-USD&channels=quotes`, { signal: AbortSignal.timeout(3_000) }).catch((e) => e);
  if (probe instanceof Response) {
    probe.body?.cancel().catch(() => {});
    assert(probe.status !== 404, 'server has no /v1/sse (404): the SSE fallback cannot be exercised');
  }
  const page = (state.ssePage = await newPage({ disableWebSocket: true }));
  await page.goto(url());
  assert(await page.evaluate(() => typeof window.WebSocket === 'undefined'), 'WebSocket was not disabled');
  await until('status sse', async () => (await connState(page)) === 'sse', 15_000);
  await until('watchlist prices', async () => {
    const r = await watchlistText(page);
    return r.length >= 8 && r.every((t) => !/^\S+ —/.test(t));
  });
  await watchlistUpdates(page, 'prices to update over SSE');
  await shot(page, 'sse');
});

test('long-polls when WebSocket and EventSource are unavailable', async () => {
  if (state.ssePage) await closePage(state.ssePage);
  state.ssePage = null;
  const page = (state.pollPage = await newPage({ disableWebSocket: true, disableEventSource: true }));
  await page.goto(url());
  await until('status poll', async () => (await connState(page)) === 'poll', 15_000);
  await until('watchlist prices', async () => {
    const r = await watchlistText(page);
    return r.length >= 8 && r.every((t) => !/^\S+ —/.test(t));
  });
  await watchlistUpdates(page, 'prices to update over long-poll');
  await until('depth levels over long-poll', async () => (await summary(page)).bookLevels > 4);
  await shot(page, 'poll');
});

test('streams with an access token (server started with --auth-token)', async () => {
  // A second server that refuses the API without the token; it keeps history
  // (SQLite in a temporary directory) so the chart's REST history needs the token too.
  const TOKEN = 'e2e-s3cret+/=';
  const authPort = await freePort();
  const storeDir = mkdtempSync(join(tmpdir(), 'tickwire-e2e-store-'));
  const proc = spawnServer(authPort, ['--auth-token', TOKEN, '--store', `sqlite://${storeDir}/tickwire.db`], 'server-auth.log');
  const pages = [];
  try {
    await waitHealthy(30_000, proc, authPort, 'server-auth.log');
    const base = `http://127.0.0.1:${authPort}`;
    const refused = await fetch(`${base}/v1/instruments`);
    assert(refused.status === 401, `without a token /v1/instruments answered ${refused.status}, not 401`);
    const withToken = `${base}/?token=${encodeURIComponent(TOKEN)}`;

    /** Every API request a page makes: fetches must send the header, streams the query parameter. */
    const watch = (page) => {
      const seen = { rest: [], streams: [] };
      page.on('request', async (r) => {
        const u = new URL(r.url());
        if (!u.pathname.startsWith('/v1/')) return;
        const kind = r.resourceType();
        const auth = (await r.allHeaders().catch(() => ({}))).authorization ?? null;
        const stream = ['/v1/ws', '/v1/sse', '/v1/poll', '/v1/replay'].includes(u.pathname);
        (stream ? seen.streams : seen.rest).push({ path: u.pathname, kind, auth, token: u.searchParams.get('token') });
      });
      page.on('websocket', (ws) => {
        const u = new URL(ws.url());
        seen.streams.push({ path: u.pathname, kind: 'websocket', auth: null, token: u.searchParams.get('token') });
      });
      return seen;
    };
    const checkSeen = (seen, streamPath) => {
      assert(seen.rest.some((r) => r.path === '/v1/instruments'), 'no REST request seen');
      const bare = seen.rest.filter((r) => r.auth !== `Bearer ${TOKEN}`);
      assert(bare.length === 0, `REST requests without the bearer token: ${JSON.stringify(bare)}`);
      assert(seen.streams.some((r) => r.path === streamPath), `no ${streamPath} request seen: ${JSON.stringify(seen.streams)}`);
      const open = seen.streams.filter((r) => r.token !== TOKEN);
      assert(open.length === 0, `stream URLs without ?token=: ${JSON.stringify(open)}`);
    };

    // Without the token: nothing streams, and the dashboard says why.
    const page = await newPage();
    pages.push(page);
    await page.goto(`${base}/`);
    await until('a hint about the token', () =>
      page.evaluate(() => window.__tickwire.store.notices.some((n) => /instruments unavailable.*token/.test(n.text))),
    );
    assert((await connState(page)) !== 'live', 'the stream went live without a token');

    // With ?token=: WebSocket.
    const seen = watch(page);
    await page.goto(withToken);
    await until('status live', async () => (await connState(page)) === 'live');
    await until('watchlist prices', async () => {
      const r = await watchlistText(page);
      return r.length >= 8 && r.every((t) => !/^\S+ —/.test(t));
    });
    await watchlistUpdates(page, 'prices to update with the token');
    await until('chart bars', async () => Number(await page.getAttribute('[data-testid=chart]', 'data-bars')) >= 1);
    await until('chart history loaded with the token', async () => {
      const note = (await page.textContent('[data-testid=chart-note]')) ?? '';
      return !/failed|not available/.test(note) && seen.rest.some((r) => r.path === '/v1/candles');
    });
    const note = (await page.textContent('[data-testid=chart-note]')) ?? '';
    assert(!/failed|not available/.test(note), `chart history: ${note}`);
    checkSeen(seen, '/v1/ws');
    await shot(page, 'auth-ws');

    // Replay (this server keeps history) connects with the token too; it has no
    // candles, so the chart builds its bars from the replayed trades meanwhile.
    await page.click('[data-testid=tab-operator]');
    await page.selectOption('[data-testid=replay-speed]', '600');
    await page.click('[data-testid=replay-start]');
    const outcome = await until('a replay outcome', async () => {
      const t = await page.textContent('[data-testid=replay-status]');
      return /playing|finished|not available/.test(t ?? '') && t;
    }, 20_000);
    assert(!/not available/.test(outcome), `replay with the token: ${outcome}`);
    assert((await summary(page)).candleChannel === null, 'a live candle channel stayed subscribed during replay');
    await page.click('[data-testid=tab-markets]');
    const replayBars = await until('replayed trades drawn as bars', async () => (await summary(page)).bars || 0, 20_000);
    log(`    replay with the token: ${outcome}; ${replayBars} bars from replayed trades`);
    checkSeen(seen, '/v1/replay');
    await page.click('[data-testid=tab-operator]');
    await page.click('[data-testid=replay-stop]');
    await page.click('[data-testid=tab-markets]');
    await until('back to live, on the live candle channel', async () => {
      const s = await summary(page);
      return (await connState(page)) === 'live' && s.candleChannel === `${s.selected} candles.${await page.evaluate(() => window.__tickwire.store.interval)}`;
    });
    await closePage(page);
    pages.pop();

    // SSE, then long-poll, with the token in their URLs.
    for (const [opts, label, path] of [
      [{ disableWebSocket: true }, 'sse', '/v1/sse'],
      [{ disableWebSocket: true, disableEventSource: true }, 'poll', '/v1/poll'],
    ]) {
      const p = await newPage(opts);
      pages.push(p);
      const s = watch(p);
      await p.goto(withToken);
      await until(`status ${label}`, async () => (await connState(p)) === label, 15_000);
      await watchlistUpdates(p, `prices to update over ${label} with the token`);
      checkSeen(s, path);
      assert(p.errors.length === 0, `page errors: ${p.errors.join(' | ')}`);
      await closePage(p);
      pages.pop();
    }
    log(`    token accepted over ws, sse and poll; REST with the bearer header`);
  } finally {
    for (const p of pages) await closePage(p);
    await stopServer('SIGTERM', proc);
    rmSync(storeDir, { recursive: true, force: true });
  }
});

test('500 symbols at 1000 updates per second keep frames flowing', async () => {
  await closeBrowsers();
  state.page = state.ssePage = state.pollPage = null;
  const page = await newPage();
  await page.goto(url());
  await until('status live', async () => (await connState(page)) === 'live');
  const r = await page.evaluate(async () => {
    const tw = window.__tickwire;
    const syms = Array.from({ length: 500 }, (_, i) => `SYN${String(i).padStart(3, '0')}`);
    for (const s of syms) tw.store.track(s);
    tw.watchlist.setSymbols(syms);
    const gaps = [];
    let last = performance.now();
    let running = true;
    const tick = (t) => {
      gaps.push(t - last);
      last = t;
      if (running) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    let seq = 0;
    let sent = 0;
    const t0 = performance.now();
    // 1,000 updates/s spread over 500 symbols, paced by elapsed time so a
    // coarse timer still delivers the full rate (in bursts, like a network).
    await new Promise((done) => {
      const iv = setInterval(() => {
        const elapsed = performance.now() - t0;
        const now = Date.now() * 1e6;
        while (sent < Math.min(elapsed, 3_000)) {
          const symbol = syms[(Math.random() * syms.length) | 0];
          const bid = (100 + Math.random()).toFixed(2);
          tw.store.apply({ kind: 'update', update: { symbol, channel: 'quotes', seq: ++seq, bid, bid_size: '1', ask: (Number(bid) + 0.01).toFixed(2), ask_size: '1', ts_event: now, ts_send: now } });
          sent++;
        }
        if (elapsed > 3_000) {
          clearInterval(iv);
          done();
        }
      }, 10);
    });
    running = false;
    const sorted = gaps.slice(1).sort((a, b) => a - b);
    const q = (arr, p) => arr[Math.min(arr.length - 1, Math.floor(p * arr.length))];
    const work = tw.renderTimes().slice(-sorted.length).sort((a, b) => a - b);
    return {
      sent,
      frames: sorted.length,
      p50: q(sorted, 0.5),
      p95: q(sorted, 0.95),
      max: sorted[sorted.length - 1],
      work50: q(work, 0.5),
      work95: q(work, 0.95),
      rows: document.querySelectorAll('[data-testid=watchlist-row]').length,
    };
  });
  const ms = (v) => `${v.toFixed(1)} ms`;
  log(`    ${r.sent} updates, ${r.rows} rows, ${r.frames} frames; frame interval p50 ${ms(r.p50)} p95 ${ms(r.p95)} max ${ms(r.max)}; our render work p50 ${ms(r.work50)} p95 ${ms(r.work95)}`);
  await shot(page, 'load-500');
  assert(r.rows === 500, `expected 500 rows, got ${r.rows}`);
  // Our own per-frame work is what the dashboard controls: it must fit well inside
  // a 16.7 ms frame. Frame intervals also depend on the (shared, 2-core) machine,
  // so their bound only catches gross regressions such as per-update DOM writes.
  assert(r.work95 <= 8, `render work p95 ${ms(r.work95)} exceeds 8 ms`);
  assert(r.p50 <= 100, `median frame interval ${ms(r.p50)}`);
  await closePage(page);
});

// ---- runner --------------------------------------------------------------

async function main() {
  if (!existsSync(BIN)) throw new Error(`server binary not found: ${BIN} (set TICKWIRE_BIN)`);
  if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  if (!existsSync(join(DIST, 'index.html'))) {
    log('dist/ missing: building');
    const b = spawnSync('npm', ['run', 'build'], { cwd: FRONTEND, stdio: 'inherit' });
    if (b.status !== 0) throw new Error('build failed');
  }
  port = await freePort();
  log(`server: ${BIN} on 127.0.0.1:${port}`);
  await startServer();

  let passed = 0;
  let failed = 0;
  for (const t of tests) {
    if (ONLY && !ONLY.has(t.name)) continue;
    const started = Date.now();
    try {
      if (!server) await startServer();
      await t.fn();
      for (const p of [state.page, state.ssePage, state.pollPage]) {
        if (p?.errors.length) throw new Error(`page errors: ${p.errors.splice(0).join(' | ')}`);
      }
      passed++;
      log(`✓ ${t.name} (${Date.now() - started} ms)`);
    } catch (e) {
      failed++;
      log(`✗ ${t.name}: ${e instanceof Error ? e.message : e}`);
      const page = state.current;
      if (page) {
        log(`    page: ${JSON.stringify(await summary(page).catch(() => null))}`);
        await shot(page, `failed-${t.name.replace(/\W+/g, '-')}`).catch(() => {});
      }
    }
  }
  log(`\n${passed} passed, ${failed} failed`);
  return failed === 0;
}

const guard = setTimeout(() => {
  log(`suite timed out after ${SUITE_TIMEOUT_MS / 1000} s`);
  killServerSync();
  process.exit(1);
}, SUITE_TIMEOUT_MS);

let ok = false;
try {
  ok = await main();
} catch (e) {
  log(`e2e setup failed: ${e instanceof Error ? e.message : e}`);
  log('\n0 passed, 1 failed');
} finally {
  clearTimeout(guard);
  await closeBrowsers();
  await stopServer();
}
process.exit(ok ? 0 : 1);
