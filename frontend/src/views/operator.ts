import { api } from '../api';
import type { FeedHealth } from '../protocol';
import type { MarketStore } from '../state/store';
import { h, setText } from '../util/dom';
import { fmtTime } from '../util/format';

export interface ReplayParams {
  symbols: string[];
  channels: string[];
  fromMs: number;
  toMs: number;
  speed: number;
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
  private readonly connections = h('span', { class: 'num big', 'data-testid': 'stat-connections' }, '—');
  private readonly storeLag = h('span', { class: 'num big', 'data-testid': 'stat-store-lag' }, '—');
  private readonly statsNote = h('div', { class: 'note' });
  private readonly notices = h('ul', { class: 'notices' });
  private readonly replayStatus = h('span', { class: 'note', 'data-testid': 'replay-status' }, 'idle');
  private readonly inputs = {
    symbols: h('input', { type: 'text', spellcheck: 'false', 'data-testid': 'replay-symbols' }),
    from: h('input', { type: 'datetime-local', step: '1', 'data-testid': 'replay-from' }),
    to: h('input', { type: 'datetime-local', step: '1', 'data-testid': 'replay-to' }),
    speed: h('select', { 'data-testid': 'replay-speed' }, ...['1', '2', '5', '10', '60', '600'].map((s) => h('option', { value: s }, `${s}×`))),
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
    const card = (title: string, ...body: (Node | string)[]) => h('section', { class: 'card' }, h('h3', {}, title), ...body);
    const { symbols, from, to, speed, quotes, trades, book } = this.inputs;
    const field = (label: string, el: HTMLElement) => h('label', { class: 'field' }, h('span', {}, label), el);
    root.append(
      h(
        'div',
        { class: 'op-grid' },
        card(
          'Feeds',
          h('table', { class: 'grid', 'data-testid': 'feeds' }, h('thead', {}, h('tr', {}, ...['Feed', 'State', 'Last msg', 'Msg/s', 'Resyncs', 'Parse errors'].map((t) => h('th', {}, t)))), this.feeds),
          this.feedsNote,
        ),
        card('Gateway', h('div', { class: 'kpis' }, h('div', {}, h('span', { class: 'label' }, 'Connected clients'), this.connections), h('div', {}, h('span', { class: 'label' }, 'Store lag'), this.storeLag)), this.statsNote),
        card(
          'Replay',
          h(
            'div',
            { class: 'form' },
            field('Symbols', symbols),
            field('From', from),
            field('To', to),
            field('Speed', speed),
            h('div', { class: 'field' }, h('span', {}, 'Channels'), h('span', {}, h('label', {}, quotes, ' quotes'), h('label', {}, trades, ' trades'), h('label', {}, book, ' book'))),
            h('div', { class: 'actions' }, this.start, this.stop, this.replayStatus),
          ),
        ),
        card('Notices', this.notices),
      ),
    );
    this.start.addEventListener('click', () => this.startReplay());
    this.stop.addEventListener('click', () => handlers.onStopReplay());
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
    this.notices.replaceChildren(
      ...this.store.notices.slice(0, 30).map((n) => h('li', { class: n.level }, h('span', { class: 'dim' }, fmtTime(n.atMs)), ' ', n.text)),
    );
  }

  private prefill(): void {
    const { symbols, from, to } = this.inputs;
    if (!symbols.value) symbols.value = this.handlers.defaultSymbols().join(',');
    if (!from.value) {
      const now = Date.now();
      from.value = localInput(now - 5 * 60_000);
      to.value = localInput(now);
    }
  }

  private startReplay(): void {
    const { symbols, from, to, speed, quotes, trades, book } = this.inputs;
    const fromMs = new Date(from.value).getTime();
    const toMs = new Date(to.value).getTime();
    const list = symbols.value.split(/[\s,]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
    const channels = [quotes.checked && 'quotes', trades.checked && 'trades', book.checked && 'book'].filter(Boolean) as string[];
    if (!list.length || !channels.length || !Number.isFinite(fromMs) || !Number.isFinite(toMs) || toMs <= fromMs) {
      setText(this.replayStatus, 'choose symbols, channels and a valid range');
      return;
    }
    this.handlers.onReplay({ symbols: list, channels, fromMs, toMs, speed: Number(speed.value) });
  }

  private async refresh(): Promise<void> {
    const [feeds, stats] = await Promise.all([api.feeds(), api.stats()]);
    if (feeds.ok && Array.isArray(feeds.data.feeds)) {
      this.feeds.replaceChildren(...feeds.data.feeds.map(feedRow));
      setText(this.feedsNote, feeds.data.feeds.length ? '' : 'no feeds configured');
    } else {
      this.feeds.replaceChildren();
      setText(this.feedsNote, feeds.ok || feeds.missing ? `/v1/feeds ${NA}` : `/v1/feeds failed: ${feeds.message}`);
    }
    if (stats.ok) {
      setText(this.connections, String(stats.data.connections ?? '—'));
      setText(this.storeLag, stats.data.store_lag_ms === null || stats.data.store_lag_ms === undefined ? 'no store' : `${stats.data.store_lag_ms} ms`);
      setText(this.statsNote, '');
    } else {
      setText(this.connections, NA);
      setText(this.storeLag, NA);
      setText(this.statsNote, stats.missing ? `/v1/stats ${NA}` : `/v1/stats failed: ${stats.message}`);
    }
  }
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
    h('td', { class: 'num' }, num(f.resyncs)),
    h('td', { class: 'num' }, num(f.parse_errors)),
  );
}

/** Value for a datetime-local input (local time, seconds precision). */
function localInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}
