import type { Instrument } from '../protocol';
import type { MarketStore, SymbolState } from '../state/store';
import { signDec, subDec } from '../util/decimal';
import { Flasher, h, setText } from '../util/dom';
import { fmtVolume } from '../util/format';

export interface WatchlistHandlers {
  onSelect(symbol: string): void;
  onAdd(symbol: string): void;
  onRemove(symbol: string): void;
}

interface Row {
  tr: HTMLTableRowElement;
  bid: HTMLElement;
  ask: HTMLElement;
  last: HTMLElement;
  chg: HTMLElement;
  pct: HTMLElement;
  vol: HTMLElement;
}

const SEARCH_MAX = 12;

/** Watchlist table plus the instrument search that adds to it. */
export class WatchlistView {
  private readonly rows = new Map<string, Row>();
  private readonly tbody = h('tbody');
  private readonly search = h('input', {
    class: 'search',
    type: 'search',
    placeholder: 'Add symbol…',
    spellcheck: 'false',
    autocomplete: 'off',
    'data-testid': 'symbol-search',
  });
  private readonly results = h('ul', { class: 'search-results', 'data-testid': 'search-results' });
  private instruments: Instrument[] = [];
  private order: string[] = [];
  private selected: string | null = null;
  /**
   * Rows on screen (or near it). Off-screen rows are not written at all: they
   * are remembered as stale and painted when scrolled into view, so the DOM
   * work per frame is bounded by what is visible, not by the watchlist size.
   */
  private readonly visible = new Set<string>();
  private readonly stale = new Set<string>();
  private readonly observer: IntersectionObserver | null;
  private readonly flasher: Flasher;

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
    private readonly handlers: WatchlistHandlers,
    requestFrame: () => void = () => {},
  ) {
    this.flasher = new Flasher(requestFrame);
    // Fixed layout: a changed cell must not make the browser re-measure every row.
    const cols = h('colgroup', {}, ...['sym', 'px', 'px', 'px', 'chg', 'pct', 'vol', 'x'].map((c) => h('col', { class: `c-${c}` })));
    const table = h(
      'table',
      { class: 'grid watchlist', 'data-testid': 'watchlist' },
      cols,
      h(
        'thead',
        {},
        h('tr', {}, ...['Symbol', 'Bid', 'Ask', 'Last', 'Chg', 'Chg%', 'Volume', ''].map((t) => h('th', {}, t))),
      ),
      this.tbody,
    );
    const scroller = h('div', { class: 'scroll' }, table);
    root.append(h('div', { class: 'search-box' }, this.search, this.results), scroller);
    this.observer =
      typeof IntersectionObserver === 'function'
        ? new IntersectionObserver((entries) => this.onVisibility(entries), { root: scroller, rootMargin: '120px 0px' })
        : null;

    this.tbody.addEventListener('click', (ev) => {
      const target = ev.target as HTMLElement;
      const tr = target.closest('tr');
      const sym = tr?.dataset.symbol;
      if (!sym) return;
      if (target.closest('.remove')) handlers.onRemove(sym);
      else handlers.onSelect(sym);
    });
    this.search.addEventListener('input', () => this.renderResults());
    this.search.addEventListener('focus', () => this.renderResults());
    this.search.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        const first = this.results.querySelector<HTMLElement>('li[data-symbol]');
        if (first) this.add(first.dataset.symbol!);
      } else if (ev.key === 'Escape') {
        this.closeResults();
      }
    });
    this.results.addEventListener('mousedown', (ev) => {
      // mousedown, not click: it fires before the input's blur hides the list.
      const li = (ev.target as HTMLElement).closest('li');
      if (li?.dataset.symbol) {
        ev.preventDefault();
        this.add(li.dataset.symbol);
      }
    });
    this.search.addEventListener('blur', () => setTimeout(() => this.closeResults(), 100));
  }

  setInstruments(list: Instrument[]): void {
    this.instruments = list;
  }

  /** Rebuilds the rows for a new symbol list (add/remove); values come from the store. */
  setSymbols(symbols: string[]): void {
    this.order = symbols;
    const keep = new Set(symbols);
    for (const [sym, row] of this.rows) {
      if (!keep.has(sym)) {
        this.observer?.unobserve(row.tr);
        row.tr.remove();
        this.rows.delete(sym);
        this.visible.delete(sym);
        this.stale.delete(sym);
      }
    }
    for (const sym of symbols) {
      let row = this.rows.get(sym);
      if (!row) {
        row = this.makeRow(sym);
        this.rows.set(sym, row);
        if (this.observer) this.observer.observe(row.tr);
        else this.visible.add(sym);
      }
      this.tbody.append(row.tr); // append moves existing rows into list order
      this.paint(sym, false);
    }
    this.setSelected(this.selected);
  }

  setSelected(symbol: string | null): void {
    this.selected = symbol;
    for (const [sym, row] of this.rows) row.tr.classList.toggle('selected', sym === symbol);
  }

  /** Called every frame: repaints changed visible rows and expires flashes. */
  render(dirty: string[]): void {
    this.flasher.sweep();
    for (const sym of dirty) {
      if (this.visible.has(sym)) this.paint(sym, true);
      else this.stale.add(sym);
    }
  }

  private onVisibility(entries: IntersectionObserverEntry[]): void {
    for (const e of entries) {
      const sym = (e.target as HTMLElement).dataset.symbol!;
      if (!e.isIntersecting) {
        this.visible.delete(sym);
        continue;
      }
      this.visible.add(sym);
      if (this.stale.delete(sym)) this.paint(sym, false);
    }
  }

  private add(symbol: string): void {
    this.search.value = '';
    this.closeResults();
    this.handlers.onAdd(symbol);
  }

  private closeResults(): void {
    this.results.replaceChildren();
    this.results.classList.remove('open');
  }

  private renderResults(): void {
    const q = this.search.value.trim().toUpperCase();
    const matches = this.instruments
      .filter((i) => !this.order.includes(i.symbol))
      .filter((i) => !q || i.symbol.toUpperCase().includes(q) || (i.kind ?? '').toUpperCase().includes(q))
      .slice(0, SEARCH_MAX);
    this.results.replaceChildren(
      ...matches.map((i) =>
        h('li', { 'data-symbol': i.symbol }, h('span', { class: 'sym' }, i.symbol), h('span', { class: 'dim' }, `${i.kind ?? ''} ${i.venue ?? ''}`)),
      ),
    );
    if (matches.length === 0 && this.instruments.length === 0) {
      this.results.append(h('li', { class: 'dim' }, 'instruments not available'));
    }
    this.results.classList.toggle('open', document.activeElement === this.search && this.results.childElementCount > 0);
  }

  private makeRow(sym: string): Row {
    const cell = (cls: string) => h('td', { class: `num ${cls}` });
    const row: Row = {
      tr: h('tr', { 'data-symbol': sym, 'data-testid': 'watchlist-row' }),
      bid: cell('bid'),
      ask: cell('ask'),
      last: cell('last'),
      chg: cell('chg'),
      pct: cell('pct'),
      vol: cell('vol'),
    };
    row.tr.append(
      h('td', { class: 'sym' }, sym),
      row.bid,
      row.ask,
      row.last,
      row.chg,
      row.pct,
      row.vol,
      h('td', { class: 'remove', title: `Remove ${sym}` }, '×'),
    );
    return row;
  }

  /** Writes a price cell and flashes it green/red by the direction of the move. */
  private price(el: HTMLElement, value: string | undefined, animate: boolean): void {
    const text = value ?? '—';
    const prev = el.textContent;
    if (!setText(el, text) || !animate || !prev || prev === '—' || value === undefined) return;
    this.flasher.flash(el, Number(value) >= Number(prev) ? 'up' : 'down');
  }

  private paint(sym: string, animate: boolean): void {
    const row = this.rows.get(sym);
    const s = this.store.symbols.get(sym);
    if (!row || !s) return;
    this.price(row.bid, s.bid, animate);
    this.price(row.ask, s.ask, animate);
    this.price(row.last, s.last, animate);
    const { chg, pct, sign } = change(s);
    setText(row.chg, chg);
    setText(row.pct, pct);
    row.chg.dataset.sign = row.pct.dataset.sign = String(sign);
    setText(row.vol, fmtVolume(s.volume));
  }
}


function change(s: SymbolState): { chg: string; pct: string; sign: number } {
  if (s.last === undefined || s.open === undefined) return { chg: '—', pct: '—', sign: 0 };
  const d = subDec(s.last, s.open);
  if (d === null) return { chg: '—', pct: '—', sign: 0 };
  const sign = signDec(d);
  const open = Number(s.open);
  const pct = open ? ((Number(d) / open) * 100).toFixed(2) + '%' : '—';
  return { chg: (sign > 0 ? '+' : '') + d, pct: (sign > 0 ? '+' : '') + pct, sign };
}
