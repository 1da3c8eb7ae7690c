import type { MarketStore } from '../state/store';
import { h, setText } from '../util/dom';
import { fmtTime } from '../util/format';

const ROWS = 60;

/** Time & sales for the selected symbol, newest on top, from a fixed row pool. */
export class TapeView {
  private readonly rows: { tr: HTMLElement; time: HTMLElement; price: HTMLElement; size: HTMLElement }[] = [];
  private newestId: number | null = null;

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
    root.append(
      h('div', { class: 'panel-head' }, h('span', { class: 'panel-title' }, 'Trades')),
      h(
        'div',
        { class: 'scroll' },
        h('table', { class: 'grid tape', 'data-testid': 'tape' }, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Price'), h('th', {}, 'Size'))), body),
      ),
    );
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
