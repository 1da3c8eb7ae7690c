import type { Instrument } from '../protocol';
import type { MarketStore, SymbolState } from '../state/store';
import { signDec, subDec } from '../util/decimal';
import { Flasher, h, setText } from '../util/dom';
import { fmtVolume } from '../util/format';
import { fmtAge, fmtAgeShort } from '../state/staleness';

export interface WatchlistHandlers {
  onSelect(symbol: string): void;
  onAdd(symbol: string): void;
  onRemove(symbol: string): void;
}

interface Row {
  tr: HTMLTableRowElement;
  age: HTMLElement;
  remove: HTMLButtonElement;
  bid: HTMLElement;
  ask: HTMLElement;
  last: HTMLElement;
  chg: HTMLElement;
  pct: HTMLElement;
  vol: HTMLElement;
}

const SEARCH_MAX = 12;

/**
 * Instruments not yet listed that match the query (upper case), best first:
 * the symbol itself, symbols that start with it, symbols with a part (after
 * `-`, `/` or a venue's `:`) that starts with it, symbols that contain it,
 * then kinds that contain it; instruments' own order within each.
 */
export function searchInstruments(instruments: Instrument[], q: string, listed: readonly string[]): Instrument[] {
  const rank = (i: Instrument): number => {
    if (!q) return 0;
    const sym = i.symbol.toUpperCase();
    if (sym === q) return 0;
    if (sym.startsWith(q)) return 1;
    if (sym.split(/[-/:]/).some((part) => part.startsWith(q))) return 2;
    if (sym.includes(q)) return 3;
    return (i.kind ?? '').toUpperCase().includes(q) ? 4 : -1;
  };
  return instruments
    .filter((i) => !listed.includes(i.symbol))
    .map((i) => ({ i, r: rank(i) }))
    .filter((x) => x.r >= 0)
    .sort((a, b) => a.r - b.r)
    .map((x) => x.i);
}

/** Why a query (upper case) offers nothing to add. */
export function noMatchMessage(instruments: Instrument[], q: string, listed: readonly string[]): string {
  const exact = listed.find((s) => s.toUpperCase() === q);
  if (exact) return `${exact} is already in the watchlist`;
  if (searchInstruments(instruments, q, []).length > 0) return `every match for "${q}" is already in the watchlist`;
  return `no instrument matches "${q}"`;
}

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
    role: 'combobox',
    'aria-label': 'Add symbol',
    'aria-autocomplete': 'list',
    'aria-expanded': 'false',
    'aria-controls': 'search-results',
  });
  private readonly results = h('ul', { class: 'search-results', id: 'search-results', role: 'listbox', 'data-testid': 'search-results' });
  /** The search result ArrowUp/ArrowDown has moved to (-1: none, Enter takes the first). */
  private active = -1;
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
      { class: 'grid watchlist', 'data-testid': 'watchlist', role: 'grid', 'aria-label': 'Watchlist: arrow keys select, Delete removes' },
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
      if (target.closest('.remove')) this.removeRow(sym);
      else handlers.onSelect(sym);
    });
    this.tbody.addEventListener('keydown', (ev) => this.onRowKey(ev));
    this.search.addEventListener('input', () => this.renderResults());
    this.search.addEventListener('focus', () => this.renderResults());
    this.search.addEventListener('keydown', (ev) => {
      const items = [...this.results.querySelectorAll<HTMLElement>('li[data-symbol]')];
      if (ev.key === 'Enter') {
        const pick = items[this.active] ?? items[0];
        if (pick) this.add(pick.dataset.symbol!);
      } else if (ev.key === 'Escape') {
        this.closeResults();
      } else if ((ev.key === 'ArrowDown' || ev.key === 'ArrowUp') && items.length) {
        ev.preventDefault();
        this.active = (this.active + (ev.key === 'ArrowDown' ? 1 : items.length - 1 + (this.active < 0 ? 1 : 0))) % items.length;
        this.markActive(items);
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

  private markActive(items: HTMLElement[]): void {
    items.forEach((li, i) => li.setAttribute('aria-selected', String(i === this.active)));
    const cur = items[this.active];
    if (cur) {
      this.search.setAttribute('aria-activedescendant', cur.id);
      cur.scrollIntoView({ block: 'nearest' });
    } else this.search.removeAttribute('aria-activedescendant');
  }

  /** Arrow keys move the selection, Home/End jump, Enter/Space select, Delete removes. */
  private onRowKey(ev: KeyboardEvent): void {
    const tr = (ev.target as HTMLElement).closest('tr');
    const sym = tr?.dataset.symbol;
    if (!sym) return;
    const i = this.order.indexOf(sym);
    let next: string | undefined;
    switch (ev.key) {
      case 'ArrowDown':
        next = this.order[Math.min(this.order.length - 1, i + 1)];
        break;
      case 'ArrowUp':
        next = this.order[Math.max(0, i - 1)];
        break;
      case 'Home':
        next = this.order[0];
        break;
      case 'End':
        next = this.order[this.order.length - 1];
        break;
      case 'Enter':
      case ' ':
        if ((ev.target as HTMLElement).closest('.remove')) return; // the button's own activation
        next = sym;
        break;
      case 'Delete':
      case 'Backspace':
        ev.preventDefault();
        this.removeRow(sym);
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (next) {
      this.handlers.onSelect(next);
      this.rows.get(next)?.tr.focus();
    }
  }

  /** Removes a row and keeps keyboard focus in the list (on the row that takes its place). */
  private removeRow(sym: string): void {
    const i = this.order.indexOf(sym);
    const hadFocus = this.rows.get(sym)?.tr.contains(document.activeElement) ?? false;
    this.handlers.onRemove(sym);
    if (!hadFocus) return;
    const next = this.order[Math.min(i, this.order.length - 1)];
    const row = next ? this.rows.get(next) : undefined;
    if (row) row.tr.focus();
    else this.search.focus();
  }

  /** Marks rows whose prices are stale (stream down, feed stale) with their age; called a few times a second. */
  renderStale(nowMs = Date.now()): void {
    for (const [sym, row] of this.rows) {
      if (!this.visible.has(sym)) continue;
      const st = this.store.symbolStaleness(sym, nowMs);
      if (row.tr.classList.toggle('stale', st.stale) !== (row.tr.dataset.stale === 'true')) row.tr.dataset.stale = String(st.stale);
      setText(row.age, st.stale ? fmtAgeShort(st.ageMs ?? 0) : '');
      const title = st.stale ? `stale: ${st.reason}; last update ${fmtAge(st.ageMs ?? 0)} ago` : '';
      if (row.age.title !== title) row.age.title = title;
    }
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
    // One tab stop for the whole list (the selected row, else the first): arrow keys move within it.
    const stop = symbol && this.rows.has(symbol) ? symbol : this.order[0];
    for (const [sym, row] of this.rows) {
      row.tr.classList.toggle('selected', sym === symbol);
      row.tr.setAttribute('aria-selected', String(sym === symbol));
      row.tr.tabIndex = sym === stop ? 0 : -1;
      row.remove.tabIndex = sym === stop ? 0 : -1;
    }
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
    this.setSelected(this.selected);
  }

  private closeResults(): void {
    this.results.replaceChildren();
    this.results.classList.remove('open');
    this.search.setAttribute('aria-expanded', 'false');
    this.search.removeAttribute('aria-activedescendant');
    this.active = -1;
  }

  private renderResults(): void {
    const q = this.search.value.trim().toUpperCase();
    const matches = searchInstruments(this.instruments, q, this.order).slice(0, SEARCH_MAX);
    this.results.replaceChildren(
      ...matches.map((i) =>
        h(
          'li',
          { 'data-symbol': i.symbol, id: `result-${i.symbol.replace(/[^\w-]/g, '_')}`, role: 'option', 'aria-selected': 'false' },
          h('span', { class: 'sym' }, i.symbol),
          h('span', { class: 'dim' }, `${i.kind ?? ''} ${i.venue ?? ''}`),
        ),
      ),
    );
    if (matches.length === 0 && this.instruments.length === 0) {
      this.results.append(h('li', { class: 'dim' }, 'instruments not available'));
    } else if (matches.length === 0 && q) {
      // Say why nothing can be added (Enter then does nothing) rather than show nothing.
      this.results.append(h('li', { class: 'dim', role: 'status', 'data-testid': 'search-message' }, noMatchMessage(this.instruments, q, this.order)));
    }
    const open = document.activeElement === this.search && this.results.childElementCount > 0;
    this.results.classList.toggle('open', open);
    this.search.setAttribute('aria-expanded', String(open));
    this.active = -1;
  }

  private makeRow(sym: string): Row {
    const cell = (cls: string) => h('td', { class: `num ${cls}` });
    const row: Row = {
      tr: h('tr', { 'data-symbol': sym, 'data-testid': 'watchlist-row', tabindex: -1, 'aria-selected': 'false' }),
      age: h('span', { class: 'age', 'data-testid': 'stale-age' }),
      remove: h('button', { type: 'button', class: 'remove-btn', tabindex: -1, 'aria-label': `Remove ${sym}`, title: `Remove ${sym} (Delete)` }, '×'),
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
      h('td', { class: 'remove' }, row.age, row.remove),
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
