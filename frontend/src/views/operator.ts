import { api } from '../api';
import { hostPort } from '../stream/gateways';
import type { FeedHealth, ServerStats } from '../protocol';
import { type MarketStore, noticeKind } from '../state/store';
import {
  LATENCY_LEGS,
  LATENCY_WINDOW_MS,
  type LegPoint,
  type StatsSample,
  TRANSPORTS,
  fmtBytesPerS,
  fmtMicros,
  fmtPerS,
  fmtQuantile,
  legSummary,
  pushSample,
  sampleOf,
  transportRates,
} from '../state/opstats';
import { fmtDateTime, fmtTime, parseDateTime, zoneLabel } from '../util/clock';
import { h, setText } from '../util/dom';

export interface ReplayParams {
  symbols: string[];
  channels: string[];
  fromMs: number;
  toMs: number;
  speed: number | 'max';
}

export interface OperatorHandlers {
  onReplay(p: ReplayParams): void;
  onStopReplay(): void;
  defaultSymbols(): string[];
}

const NA = 'not available';

/** Operator tab: feed health, server stats, replay control and a notice log. */
export class OperatorView {
  private readonly feeds = h('tbody');
  private readonly feedsNote = h('div', { class: 'note', 'data-testid': 'feeds-note' });
  /** The node's cluster role and where its data comes from (`/v1/feeds` `role`). */
  private readonly role = h('span', { 'data-testid': 'node-role' });
  /** The server build (`/v1/stats` `version`), shown beside the role. */
  private readonly version = h('span', { class: 'version', 'data-testid': 'node-version' });
  private readonly transports = h('tbody');
  private readonly subscriptions = h('span', { class: 'num', 'data-testid': 'stat-subscriptions' }, '—');
  private readonly transportsNote = h('div', { class: 'note', 'data-testid': 'transports-note' });
  private readonly latency = h('tbody');
  private readonly latencyNote = h('div', { class: 'note', 'data-testid': 'latency-note' });
  /** /v1/stats polls of the last 5 minutes (one server run, one gateway). */
  private window: StatsSample[] = [];
  private gateway = '';
  private readonly connections = h('span', { class: 'num big', 'data-testid': 'stat-connections' }, '—');
  private readonly storeLag = h('span', { class: 'num big', 'data-testid': 'stat-store-lag' }, '—');
  /** Every other /v1/stats figure, by its field name. */
  private readonly kpis = new Map<string, HTMLElement>();
  private readonly statsNote = h('div', { class: 'note' });
  /** Which gateway the figures come from (several gateways only). */
  private readonly gatewayNote = h('div', { class: 'note gateway-note', 'data-testid': 'op-gateway', hidden: true });
  private readonly notices = h('ul', { class: 'notices', 'data-testid': 'notices' });
  private readonly noticeCounts = h('div', { class: 'note', 'data-testid': 'notice-counts' });
  private readonly faultsOnly = h('input', { type: 'checkbox', 'data-testid': 'faults-only' });
  private readonly zoneNotes: HTMLElement[] = [];
  private readonly replayStatus = h('span', { class: 'note', 'data-testid': 'replay-status' }, 'idle');
  private readonly inputs = {
    symbols: h('input', { type: 'text', spellcheck: 'false', 'data-testid': 'replay-symbols' }),
    from: h('input', { type: 'text', spellcheck: 'false', placeholder: 'YYYY-MM-DD HH:MM:SS', 'data-testid': 'replay-from' }),
    to: h('input', { type: 'text', spellcheck: 'false', placeholder: 'YYYY-MM-DD HH:MM:SS', 'data-testid': 'replay-to' }),
    speed: h('select', { 'data-testid': 'replay-speed' }, ...['1', '2', '5', '10', '60', '600', 'max'].map((s) => h('option', { value: s }, s === 'max' ? 'max' : `${s}×`))),
    quotes: h('input', { type: 'checkbox', checked: true }),
    trades: h('input', { type: 'checkbox', checked: true }),
    book: h('input', { type: 'checkbox', checked: true }),
  };
  private readonly start = h('button', { type: 'button', class: 'primary', 'data-testid': 'replay-start' }, 'Start replay');
  private readonly stop = h('button', { type: 'button', disabled: true, 'data-testid': 'replay-stop' }, 'Back to live');
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
    private readonly handlers: OperatorHandlers,
  ) {
    const card = (title: string, ...body: (Node | string)[]) =>
      h('section', { class: title === 'Feeds' || title === 'Gateway' ? 'card wide' : 'card', 'data-testid': `card-${title.toLowerCase()}` }, h('h3', {}, title), ...body);
    const { symbols, from, to, speed, quotes, trades, book } = this.inputs;
    const field = (label: string, el: HTMLElement) => h('label', { class: 'field' }, h('span', {}, label), el);
    const zoned = (label: string, el: HTMLElement) => {
      const z = h('span', { class: 'dim zone' }, zoneLabel());
      this.zoneNotes.push(z);
      return h('label', { class: 'field' }, h('span', {}, label), h('span', { class: 'zoned' }, el, z));
    };
    const kpi = (label: string, key: string, title: string) => {
      const v = h('span', { class: 'num big', 'data-testid': `stat-${key.replace(/_/g, '-')}` }, '—');
      this.kpis.set(key, v);
      return h('div', { title }, h('span', { class: 'label' }, label), v);
    };
    root.append(
      h(
        'div',
        { class: 'op-grid' },
        card(
          'Feeds',
          h('table', { class: 'grid', 'data-testid': 'feeds' }, h('thead', {}, h('tr', {}, ...['Feed', 'State', 'Lag (last msg)', 'Msg/s', 'Messages', 'Reconnects', 'Resyncs', 'Parse errors', 'Last error'].map((t) => h('th', {}, t)))), this.feeds),
          this.feedsNote,
          h('div', { class: 'note' }, this.version, this.role),
        ),
        card(
          'Gateway',
          this.gatewayNote,
          h(
            'div',
            { class: 'kpis' },
            h('div', { title: "the server's count of /v1/ws connections: replay, SSE and long-poll clients are not counted" }, h('span', { class: 'label' }, 'WebSocket clients'), this.connections),
            kpi('Uptime', 'uptime_s', 'since the server started'),
            kpi('Published', 'events_published', 'events published to the fan-out'),
            kpi('Delivered', 'updates_delivered', 'updates delivered to subscribers'),
            kpi('Conflated', 'conflated', 'updates replaced by a newer one for a client that could not keep up (normal under load)'),
            kpi('Dropped trades', 'dropped_trades', 'trades dropped for slow clients (each with a gap notice): a fault'),
            kpi('Book resnapshots', 'book_resnapshots', 'books sent again as snapshots to clients that fell behind'),
            kpi('Slow-consumer closes', 'slow_consumer_closes', 'connections closed for falling too far behind: a fault'),
          ),
          h(
            'div',
            { class: 'kpis' },
            h('div', { title: 'how far the history writer trails the live stream' }, h('span', { class: 'label' }, 'Store lag'), this.storeLag),
            kpi('Store written', 'store_written', 'records written to the store'),
            kpi('Store queued', 'store_queued', 'records waiting for the writer'),
            kpi('Journal', 'store_journaled', 'records spilled to the on-disk journal while the store was slow or down'),
            kpi('Journal bytes', 'store_spilled_bytes', 'bytes spilled to the journal'),
            kpi('From journal', 'store_written_from_journal', 'journaled records written to the store since'),
            kpi('Store lost', 'store_lost', 'records the store lost (history has holes): a fault'),
          ),
          this.statsNote,
        ),
        card(
          'Transports',
          h(
            'table',
            { class: 'grid', 'data-testid': 'transports' },
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                h('th', {}, 'Transport'),
                h('th', { title: 'open connections now' }, 'Connections'),
                h('th', { title: 'subscriptions (channel × symbol) held on this transport now' }, 'Subs'),
                h('th', { title: 'updates written to clients a second, between the last two polls' }, 'Msg/s'),
                h('th', { title: 'bytes handed to sockets a second, between the last two polls' }, 'Bytes/s'),
              ),
            ),
            this.transports,
          ),
          h('div', { class: 'kv', title: 'subscriptions (channel × symbol) held by all clients together' }, h('span', { class: 'dim' }, 'Subscriptions'), this.subscriptions),
          this.transportsNote,
        ),
        card(
          'Latency',
          h(
            'table',
            { class: 'grid latency', 'data-testid': 'op-latency' },
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                h('th', {}, 'Leg'),
                h('th', { title: 'median over the last 5 minutes' }, 'p50'),
                h('th', { title: '99th percentile over the last 5 minutes' }, 'p99'),
                h('th', { class: 'chart-col', title: 'p50 and p99 per poll interval (~2 s) over the last 5 minutes, log scale' }, h('span', { class: 'p50' }, 'p50'), ' ', h('span', { class: 'p99' }, 'p99'), ' · 5 min'),
              ),
            ),
            this.latency,
          ),
          this.latencyNote,
        ),
        card(
          'Replay',
          h(
            'div',
            { class: 'form' },
            field('Symbols', symbols),
            zoned('From', from),
            zoned('To', to),
            field('Speed', speed),
            h('div', { class: 'field' }, h('span', {}, 'Channels'), h('span', {}, h('label', {}, quotes, ' quotes'), h('label', {}, trades, ' trades'), h('label', {}, book, ' book'))),
            h('div', { class: 'actions' }, this.start, this.stop, this.replayStatus),
          ),
        ),
        card('Notices', h('div', { class: 'notice-head' }, this.noticeCounts, h('label', {}, this.faultsOnly, ' faults only')), this.notices),
      ),
    );
    this.start.addEventListener('click', () => this.startReplay());
    this.stop.addEventListener('click', () => handlers.onStopReplay());
    this.faultsOnly.addEventListener('change', () => this.renderNotices());
  }

  /** The gateway in use (the one these figures and /v1/feeds come from), among `all`. */
  setGateway(current: string, all: readonly string[]): void {
    // Another gateway's counters are another server's: its window starts afresh.
    if (current !== this.gateway) this.window = [];
    this.gateway = current;
    this.gatewayNote.hidden = all.length <= 1;
    if (all.length <= 1) return;
    const i = all.indexOf(current);
    setText(this.gatewayNote, `${hostPort(current)} · gateway ${i + 1} of ${all.length} (${all.map(hostPort).join(', ')})`);
  }

  /** The clock setting changed: the form's times are rewritten in the new zone. */
  applyClock(previous: 'utc' | 'local'): void {
    for (const z of this.zoneNotes) setText(z, zoneLabel());
    for (const el of [this.inputs.from, this.inputs.to]) {
      const ms = parseDateTime(el.value, previous);
      if (ms !== null) el.value = fmtDateTime(ms);
    }
    this.renderNotices();
  }

  /** Starts polling while the tab is shown; stops when hidden, to spare the server. */
  show(visible: boolean): void {
    if (visible && !this.timer) {
      this.prefill();
      void this.refresh();
      this.timer = setInterval(() => void this.refresh(), 2_000);
    } else if (!visible && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** `active`: the widgets show replayed data, so "Back to live" is offered. */
  setReplayState(active: boolean, text: string): void {
    this.stop.disabled = !active;
    setText(this.replayStatus, text);
  }

  renderNotices(): void {
    const all = this.store.notices;
    const faults = all.filter((n) => noticeKind(n) === 'fault').length;
    const recoveries = all.filter((n) => noticeKind(n) === 'recovery').length;
    setText(this.noticeCounts, `${faults} fault${faults === 1 ? '' : 's'} · ${recoveries} recover${recoveries === 1 ? 'y' : 'ies'} · times ${zoneLabel()}`);
    const shown = this.faultsOnly.checked ? all.filter((n) => noticeKind(n) === 'fault') : all;
    this.notices.replaceChildren(
      ...shown.slice(0, 30).map((n) => {
        const kind = noticeKind(n);
        return h(
          'li',
          { class: `${n.level} ${kind}`, 'data-kind': kind },
          h('span', { class: 'dim', 'data-testid': 'notice-time' }, fmtTime(n.atMs)),
          ' ',
          h('span', { class: `tag ${kind}` }, kind),
          ' ',
          n.text,
        );
      }),
    );
  }

  private prefill(): void {
    const { symbols, from, to } = this.inputs;
    if (!symbols.value) symbols.value = this.handlers.defaultSymbols().join(',');
    if (!from.value) {
      const now = Date.now();
      from.value = fmtDateTime(now - 5 * 60_000);
      to.value = fmtDateTime(now);
    }
  }

  private startReplay(): void {
    const { symbols, from, to, speed, quotes, trades, book } = this.inputs;
    const fromMs = parseDateTime(from.value) ?? NaN;
    const toMs = parseDateTime(to.value, undefined, fromMs) ?? NaN;
    const list = symbols.value.split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
    const channels = [quotes.checked && 'quotes', trades.checked && 'trades', book.checked && 'book'].filter(Boolean) as string[];
    if (!list.length || !channels.length || !Number.isFinite(fromMs) || !Number.isFinite(toMs) || toMs <= fromMs) {
      setText(this.replayStatus, 'choose symbols, channels and a valid range');
      return;
    }
    this.handlers.onReplay({ symbols: list, channels, fromMs, toMs, speed: speed.value === 'max' ? 'max' : Number(speed.value) });
  }

  private async refresh(): Promise<void> {
    const [feeds, stats] = await Promise.all([api.feeds(), api.stats()]);
    if (feeds.ok) setText(this.role, roleText(feeds.data.role));
    if (feeds.ok && Array.isArray(feeds.data.feeds)) {
      this.feeds.replaceChildren(...feeds.data.feeds.map(feedRow));
      setText(this.feedsNote, feeds.data.feeds.length ? '' : 'no feeds configured');
    } else {
      this.feeds.replaceChildren();
      setText(this.feedsNote, feeds.ok || feeds.missing ? `/v1/feeds ${NA}` : `/v1/feeds failed: ${feeds.message}`);
    }
    this.renderServerRates(stats.ok ? stats.data : null, stats.ok ? '' : stats.missing ? `/v1/stats ${NA}` : `/v1/stats failed: ${stats.message}`);
    if (stats.ok) {
      setText(this.connections, String(stats.data.connections ?? '—'));
      setText(this.storeLag, stats.data.store_lag_ms === null || stats.data.store_lag_ms === undefined ? 'no store' : `${stats.data.store_lag_ms} ms`);
      for (const [key, el] of this.kpis) {
        const v = stats.data[key as keyof ServerStats];
        const text = key === 'uptime_s' ? fmtUptime(v) : v === null ? 'no store' : v === undefined ? NA : String(v);
        setText(el, text);
        // Counts that mean something went wrong are flagged when non-zero.
        el.classList.toggle('fault', FAULT_COUNTS.has(key) && typeof v === 'number' && v > 0);
      }
      setText(this.statsNote, '');
    } else {
      setText(this.connections, NA);
      setText(this.storeLag, NA);
      for (const el of this.kpis.values()) setText(el, NA);
      setText(this.statsNote, stats.missing ? `/v1/stats ${NA}` : `/v1/stats failed: ${stats.message}`);
    }
  }

  /** Version, Transports and Latency from this poll and the window of earlier ones. */
  private renderServerRates(stats: ServerStats | null, failure: string): void {
    setText(this.version, typeof stats?.version === 'string' ? `v${stats.version} · ` : '');
    if (!stats) {
      // Keep the window: one failed poll is no restart (a restart shows in the counters).
      setText(this.transportsNote, failure);
      setText(this.latencyNote, failure);
      return;
    }
    const now = Date.now();
    this.window = pushSample(this.window, sampleOf(stats, now));
    setText(this.subscriptions, typeof stats.subscriptions === 'number' ? String(stats.subscriptions) : NA);

    const rates = transportRates(this.window);
    if (rates) {
      const names = [...TRANSPORTS.filter((t) => t in rates), ...Object.keys(rates).filter((t) => !(TRANSPORTS as readonly string[]).includes(t))];
      this.transports.replaceChildren(
        ...names.map((name) => {
          const r = rates[name];
          return h(
            'tr',
            { 'data-transport': name },
            h('td', { class: 'sym' }, name),
            h('td', { class: 'num', 'data-testid': 'tr-connections' }, String(r.connections)),
            h('td', { class: 'num', 'data-testid': 'tr-subscriptions' }, r.subscriptions === null ? '—' : String(r.subscriptions)),
            h('td', { class: 'num', 'data-testid': 'tr-messages', 'data-value': r.messagesPerS ?? '' }, fmtPerS(r.messagesPerS)),
            h('td', { class: 'num', 'data-testid': 'tr-bytes', 'data-value': r.bytesPerS ?? '' }, fmtBytesPerS(r.bytesPerS)),
          );
        }),
      );
      setText(this.transportsNote, names.some((n) => rates[n].messagesPerS === null) ? 'rates from the next poll' : '');
    } else {
      this.transports.replaceChildren();
      setText(this.transportsNote, `per-transport figures ${NA} on this server build`);
    }

    const first = this.window[0];
    const spanMs = now - first.atMs;
    if (!first.latency && !this.window[this.window.length - 1].latency) {
      this.latency.replaceChildren();
      setText(this.latencyNote, `latency histograms ${NA} on this server build`);
      return;
    }
    const newest = this.window[this.window.length - 1].latency;
    const legs = [...LATENCY_LEGS, ...Object.keys(newest?.legs ?? {}).filter((l) => !(LATENCY_LEGS as readonly string[]).includes(l))];
    const rows = legs.map((leg) => [leg, legSummary(this.window, leg)] as const).filter(([, s]) => s !== null);
    this.latency.replaceChildren(
      ...rows.map(([leg, s]) => {
        const waiting = this.window.length < 2;
        return h(
          'tr',
          { 'data-leg': leg, title: `${leg}: ${s!.samples} samples in the window` },
          h('td', {}, LEG_LABELS[leg] ?? leg),
          h('td', { class: `num${s!.p50 ? '' : ' dim'}`, 'data-testid': 'lat-p50' }, waiting ? '—' : fmtQuantile(s!.p50)),
          h('td', { class: `num${s!.p99 ? '' : ' dim'}`, 'data-testid': 'lat-p99' }, waiting ? '—' : fmtQuantile(s!.p99)),
          h('td', { class: 'chart-col' }, latencyChart(s!.points, now - LATENCY_WINDOW_MS, now)),
        );
      }),
    );
    const span = spanMs >= LATENCY_WINDOW_MS - 5_000 ? 'last 5 min' : this.window.length < 2 ? 'from the next poll' : `last ${fmtSpan(spanMs)} (polled while this tab is open)`;
    setText(this.latencyNote, `${span} · interpolated within the server's buckets`);
  }
}

/** The legs' names as read: "where the clock starts → where it stops". */
const LEG_LABELS: Record<string, string> = {
  exchange_to_receive: 'exchange → receive',
  receive_to_send: 'receive → send',
  receive_to_write_ws: 'receive → ws write',
  receive_to_write_sse: 'receive → SSE write',
  receive_to_write_poll: 'receive → poll write',
};

function fmtSpan(ms: number): string {
  const s = Math.round(ms / 1_000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const CHART_W = 300;
const CHART_H = 22;
const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * SVG path data for one quantile's points over [fromMs, toMs] on a log scale
 * [loUs, hiUs]: a point with no value breaks the line; a lone point is a short tick.
 */
export function chartPath(points: readonly { atMs: number; us: number | null }[], fromMs: number, toMs: number, loUs: number, hiUs: number, w = CHART_W, hgt = CHART_H): string {
  const x = (t: number) => ((t - fromMs) / (toMs - fromMs)) * w;
  const y = (us: number) => {
    const f = (Math.log10(Math.min(hiUs, Math.max(loUs, us))) - Math.log10(loUs)) / (Math.log10(hiUs) - Math.log10(loUs));
    return hgt - 1 - f * (hgt - 2);
  };
  const parts: string[] = [];
  let run: string[] = [];
  const flush = () => {
    if (run.length === 1) run.push(run[0].replace(/^(-?[\d.]+)/, (v) => String(Number(v) + 1.5)));
    if (run.length) parts.push(`M${run.join('L')}`);
    run = [];
  };
  for (const p of points) {
    if (p.atMs < fromMs) continue;
    if (p.us === null) flush();
    else run.push(`${x(p.atMs).toFixed(1)},${y(p.us).toFixed(1)}`);
  }
  flush();
  return parts.join('');
}

/** The log scale for a chart: whole decades around every value shown. */
export function chartScale(values: readonly number[]): [number, number] {
  if (!values.length) return [10, 1_000];
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(1, Math.min(...values)))));
  let hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values))));
  if (hi <= lo) hi = lo * 10;
  return [lo, hi];
}

const trimmed = (us: number) => fmtMicros(us).replace(/\.0+ /, ' ');

/** A small inline chart of p50 and p99 over the window (no chart library). */
function latencyChart(points: readonly LegPoint[], fromMs: number, toMs: number): SVGSVGElement {
  const inWindow = points.filter((p) => p.atMs >= fromMs);
  const values = inWindow.flatMap((p) => [p.p50?.us, p.p99?.us]).filter((v): v is number => v !== undefined);
  const [lo, hi] = chartScale(values);
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${CHART_W} ${CHART_H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'spark');
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = values.length ? `log scale ${trimmed(lo)} – ${trimmed(hi)}; one point per poll interval` : 'no samples in the last 5 minutes';
  svg.append(title);
  for (const q of ['p99', 'p50'] as const) {
    const d = chartPath(
      inWindow.map((p) => ({ atMs: p.atMs, us: p[q]?.us ?? null })),
      fromMs,
      toMs,
      lo,
      hi,
    );
    if (!d) continue;
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', d);
    path.setAttribute('class', q);
    path.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(path);
  }
  return svg;
}

const FAULT_COUNTS = new Set(['dropped_trades', 'slow_consumer_closes', 'store_lost']);

function fmtUptime(v: unknown): string {
  if (typeof v !== 'number') return NA;
  const d = Math.floor(v / 86_400);
  const hh = Math.floor((v % 86_400) / 3_600);
  const mm = Math.floor((v % 3_600) / 60);
  const ss = v % 60;
  return d ? `${d}d ${hh}h ${mm}m` : hh ? `${hh}h ${mm}m ${ss}s` : mm ? `${mm}m ${ss}s` : `${ss}s`;
}

function feedRow(f: FeedHealth): HTMLElement {
  const num = (v: number | null | undefined, digits = 0) => (v === null || v === undefined ? '—' : v.toFixed(digits));
  return h(
    'tr',
    {},
    h('td', { class: 'sym' }, f.name),
    h('td', {}, h('span', { class: `pill small state-${f.state}` }, f.state)),
    h('td', { class: 'num' }, f.last_message_age_ms === null || f.last_message_age_ms === undefined ? '—' : `${f.last_message_age_ms} ms`),
    h('td', { class: 'num' }, num(f.messages_per_sec, 0)),
    h('td', { class: 'num' }, num(f.messages)),
    h('td', { class: 'num' }, num(f.reconnects)),
    h('td', { class: 'num' }, num(f.resyncs)),
    h('td', { class: 'num' }, num(f.parse_errors)),
    h('td', { class: 'dim last-error', title: f.last_error ?? '' }, f.last_error ? f.last_error : f.last_error === undefined ? 'not reported' : '—'),
  );
}

/** What a node's cluster role means for the figures above. */
export function roleText(role: string | undefined): string {
  switch (role) {
    case undefined:
    case 'all':
      return 'single process: its feeds run here';
    case 'gateway':
      return 'cluster gateway: data from the bus (NATS JetStream), sequenced by the ingest node';
    case 'ingest':
      return 'cluster ingest node: its feeds run here and publish to the bus';
    case 'store':
      return 'cluster store node: writes history from the bus';
    default:
      return `cluster role ${role}`;
  }
}
