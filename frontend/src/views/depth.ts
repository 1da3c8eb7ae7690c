import type { Level } from '../protocol';
import type { MarketStore } from '../state/store';
import { addDec, formatDec, parseDec, subDec } from '../util/decimal';
import { h, setText } from '../util/dom';
import { fmtAge } from '../state/staleness';
import { fmtTime } from '../util/clock';

const LEVELS = 14;

interface LevelRow {
  tr: HTMLElement;
  price: HTMLElement;
  size: HTMLElement;
  total: HTMLElement;
}

/** L2 ladder: asks above (best at the bottom), spread, bids below (best on top). */
export class DepthView {
  private readonly asks: LevelRow[] = [];
  private readonly bids: LevelRow[] = [];
  private readonly spread = h('td', { colspan: 3, class: 'spread' });
  private readonly status = h('span', { class: 'note', 'data-testid': 'depth-status' });
  private readonly mark = h('span', { class: 'stale-mark', 'data-testid': 'depth-stale', hidden: true });
  private table!: HTMLElement;
  /** What the panel says in replay before the replay's book snapshot (or when the book is not replayed). */
  replayNote: string | null = null;

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
  ) {
    const body = h('tbody');
    const make = (side: 'bid' | 'ask'): LevelRow => {
      const r = { tr: h('tr', { class: side }), price: h('td', { class: 'num price' }), size: h('td', { class: 'num' }), total: h('td', { class: 'num dim' }) };
      r.tr.append(r.price, r.size, r.total);
      return r;
    };
    for (let i = 0; i < LEVELS; i++) this.asks.push(make('ask'));
    for (let i = 0; i < LEVELS; i++) this.bids.push(make('bid'));
    for (let i = LEVELS - 1; i >= 0; i--) body.append(this.asks[i].tr);
    body.append(h('tr', { class: 'spread-row' }, this.spread));
    for (const r of this.bids) body.append(r.tr);
    this.table = h('table', { class: 'grid depth', 'data-testid': 'depth' }, h('thead', {}, h('tr', {}, h('th', {}, 'Price'), h('th', {}, 'Size'), h('th', {}, 'Total'))), body);
    root.append(h('div', { class: 'panel-head' }, h('span', { class: 'panel-title' }, 'Depth'), this.mark, this.status), h('div', { class: 'scroll' }, this.table));
  }

  /** Marks the book stale with its age (stream down, feed stale, invalidated); called a few times a second. */
  renderStale(nowMs = Date.now()): void {
    const st = this.store.bookStaleness(nowMs);
    this.mark.hidden = !st.stale;
    this.table.classList.toggle('stale', st.stale);
    this.table.dataset.stale = String(st.stale);
    if (st.stale) setText(this.mark, `stale ${fmtAge(st.ageMs ?? 0)} · ${st.reason}`);
  }

  render(): void {
    const { book, bookStatus } = this.store;
    const { bids, asks } = book.top(LEVELS);
    const scale = sizeScale([...bids, ...asks]);
    const cumB = cumulative(bids, scale);
    const cumA = cumulative(asks, scale);
    const max = Math.max(Number(cumB[cumB.length - 1] ?? 0), Number(cumA[cumA.length - 1] ?? 0)) || 1;
    fill(this.bids, bids, cumB, max);
    fill(this.asks, asks, cumA, max);
    const spread = bids[0] && asks[0] ? subDec(asks[0][0], bids[0][0]) : null;
    setText(this.spread, spread === null ? '' : `spread ${spread}`);
    const waiting = this.replayNote ?? 'waiting for book…';
    const at = this.store.bookEventMs;
    const live = `seq ${book.seq}${at ? ` · ${fmtTime(at)}` : ''}`;
    setText(this.status, bookStatus === 'live' ? live : bookStatus === 'resync' ? 'resyncing…' : waiting);
    this.status.title = bookStatus === 'live' ? 'sequence and exchange time of the last book change' : bookStatus === 'resync' ? '' : waiting;
  }
}

/** The most decimals among the sizes shown (the instrument's size decimals, as the server writes them). */
export function sizeScale(levels: Level[]): number {
  return levels.reduce((m, [, s]) => Math.max(m, parseDec(s)?.scale ?? 0), 0);
}

/**
 * Running totals of the sizes, exact (decimal strings, no float artefacts),
 * every one at `scale` decimals so that the Total column reads in one format,
 * the Size column's.
 */
export function cumulative(levels: Level[], scale: number): string[] {
  let acc = '0';
  return levels.map(([, s]) => {
    acc = addDec(acc, s) ?? acc;
    return formatDec(parseDec(acc)!, scale);
  });
}

function fill(rows: LevelRow[], levels: Level[], cum: string[], max: number): void {
  rows.forEach((r, i) => {
    const l = levels[i];
    setText(r.price, l ? l[0] : '');
    setText(r.size, l ? l[1] : '');
    setText(r.total, l ? cum[i] : '');
    // The row background draws cumulative depth (CSS gradient on --depth).
    r.tr.style.setProperty('--depth', l ? `${((Number(cum[i]) / max) * 100).toFixed(1)}%` : '0%');
  });
}
