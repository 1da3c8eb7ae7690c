import type { MarketStore } from '../state/store';
import { h, setText } from '../util/dom';
import { fmtTime } from '../util/clock';
import { fmtAge } from '../state/staleness';

const ROWS = 60;

/** Time & sales for the selected symbol, newest on top, from a fixed row pool. */
export class TapeView {
  private readonly rows: { tr: HTMLElement; time: HTMLElement; price: HTMLElement; size: HTMLElement }[] = [];
  private newestId: number | null = null;
  private readonly mark = h('span', { class: 'stale-mark', 'data-testid': 'tape-stale', hidden: true });
  private table: HTMLElement;

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
  ) {
    const body = h('tbody');
    for (let i = 0; i < ROWS; i++) {
      const r = { tr: h('tr'), time: h('td', { class: 'dim' }), price: h('td', { class: 'num' }), size: h('td', { class: 'num' }) };
      r.tr.append(r.time, r.price, r.size);
      this.rows.push(r);
      body.append(r.tr);
    }
    this.table = h('table', { class: 'grid tape', 'data-testid': 'tape' }, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Price'), h('th', {}, 'Size'))), body);
    root.append(h('div', { class: 'panel-head' }, h('span', { class: 'panel-title' }, 'Trades'), this.mark), h('div', { class: 'scroll' }, this.table));
  }

  /** Marks the tape stale (stream down, feed stale) with the age of its newest data; called a few times a second. */
  renderStale(nowMs = Date.now()): void {
    const sel = this.store.selected;
    const st = sel ? this.store.symbolStaleness(sel, nowMs) : null;
    const stale = !!st?.stale;
    this.mark.hidden = !stale;
    this.table.classList.toggle('stale', stale);
    if (stale) setText(this.mark, `stale ${fmtAge(st!.ageMs ?? 0)} · ${st!.reason}`);
  }

  /** Redraws every row (the clock setting changed). */
  redraw(): void {
    this.newestId = null;
    for (const r of this.rows) r.time.textContent = '';
    this.render();
  }

  render(): void {
    const tape = this.store.tape;
    // Rows newer than what was on top last frame get a brief highlight.
    const fresh = this.newestId === null ? 0 : Math.max(0, tape.findIndex((t) => t.tradeId === this.newestId));
    this.newestId = tape[0]?.tradeId ?? null;
    for (let i = 0; i < ROWS; i++) {
      const r = this.rows[i];
      const t = tape[i];
      if (!t) {
        r.tr.className = 'empty';
        setText(r.time, '');
        setText(r.price, '');
        setText(r.size, '');
        continue;
      }
      r.tr.className = `${t.side}${i < fresh ? ' fresh' : ''}`;
      setText(r.time, fmtTime(t.tsMs));
      setText(r.price, t.price);
      setText(r.size, t.size);
    }
  }
}
