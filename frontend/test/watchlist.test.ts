// @vitest-environment happy-dom
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { MarketStore } from '../src/state/store';
import { Flasher } from '../src/util/dom';
import { WatchlistView } from '../src/views/watchlist';

const clocks = { ts_event: 1, ts_send: 1 };

describe('WatchlistView', () => {
  beforeEach(() => {
    // happy-dom's IntersectionObserver never reports; without one every row counts as visible.
    vi.stubGlobal('IntersectionObserver', undefined);
    document.body.innerHTML = '';
  });

  function mount() {
    const root = document.createElement('div');
    document.body.append(root);
    const store = new MarketStore();
    const handlers = { onSelect: vi.fn(), onAdd: vi.fn(), onRemove: vi.fn() };
    const view = new WatchlistView(root, store, handlers);
    for (const s of ['BTC-USD', 'ETH-USD']) store.track(s);
    view.setSymbols(['BTC-USD', 'ETH-USD']);
    return { root, store, view, handlers };
  }

  const cell = (root: HTMLElement, sym: string, cls: string) => root.querySelector(`tr[data-symbol="${sym}"] td.${cls}`)!;

  it('shows the server strings and flashes by direction', () => {
    const { root, store, view } = mount();
    const quote = (seq: number, bid: string) =>
      store.apply({ kind: 'update', update: { symbol: 'BTC-USD', channel: 'quotes', seq, bid, bid_size: '1', ask: '64124.00', ask_size: '1', ...clocks } });
    quote(1, '64123.50');
    view.render(store.takeDirty().symbols);
    expect(cell(root, 'BTC-USD', 'bid').textContent).toBe('64123.50');
    quote(2, '64123.60');
    view.render(store.takeDirty().symbols);
    expect(cell(root, 'BTC-USD', 'bid').classList.contains('flash-up')).toBe(true);
    quote(3, '64000.00');
    view.render(store.takeDirty().symbols);
    expect(cell(root, 'BTC-USD', 'bid').classList.contains('flash-down')).toBe(true);
    expect(cell(root, 'BTC-USD', 'bid').classList.contains('flash-up')).toBe(false);
    expect(cell(root, 'BTC-USD', 'ask').className).not.toMatch(/flash/); // unchanged value
  });

  it('computes change from the session open exactly', () => {
    const { root, store, view } = mount();
    store.applyRestSnapshot([{ symbol: 'ETH-USD', quote: null, last_trade: null, stats: { open: '3400.10', high: '1', low: '1', volume: '12.5', trades: 1 } }]);
    store.apply({ kind: 'update', update: { symbol: 'ETH-USD', channel: 'trades', seq: 1, price: '3399.90', size: '0.5', side: 'sell', trade_id: 1, ...clocks } });
    view.render(store.takeDirty().symbols);
    expect(cell(root, 'ETH-USD', 'chg').textContent).toBe('-0.20');
    expect(cell(root, 'ETH-USD', 'pct').textContent).toBe('-0.01%');
    expect(cell(root, 'ETH-USD', 'vol').textContent).toBe('13.0');
  });

  it('in replay derives change and volume from the replayed trades since the start or the last seek', () => {
    const { root, store, view } = mount();
    const trade = (sym: string, seq: number, price: string, size: string) =>
      store.apply({ kind: 'update', update: { symbol: sym, channel: 'trades', seq, price, size, side: 'buy', trade_id: seq, ...clocks } });
    const row = (sym: string) => {
      view.render(store.takeDirty().symbols);
      return ['last', 'chg', 'pct', 'vol'].map((c) => cell(root, sym, c).textContent);
    };
    store.replay = true;
    store.clearData();
    expect(row('BTC-USD')).toEqual(['—', '—', '—', '—']);
    // The replay sends no stats: the first replayed trade opens, sizes add up exactly.
    trade('BTC-USD', 1, '64000.00', '0.25');
    expect(row('BTC-USD')).toEqual(['64000.00', '0.00', '0.00%', '0.25']);
    trade('BTC-USD', 2, '64320.00', '0.5');
    trade('BTC-USD', 3, '64640.00', '1.125');
    expect(row('BTC-USD')).toEqual(['64640.00', '+640.00', '+1.00%', '1.875']);
    expect(cell(root, 'BTC-USD', 'pct').getAttribute('data-sign')).toBe('1');
    // Each symbol against its own first replayed trade.
    trade('ETH-USD', 1, '3400.00', '2');
    trade('ETH-USD', 2, '3383.00', '1500');
    expect(row('ETH-USD')).toEqual(['3383.00', '-17.00', '-0.50%', '1.50K']);
    expect(cell(root, 'ETH-USD', 'chg').getAttribute('data-sign')).toBe('-1');
    // A seek starts them afresh from the first trade after it.
    store.clearReplayData();
    expect(row('BTC-USD')).toEqual(['—', '—', '—', '—']);
    trade('BTC-USD', 1, '63000.00', '0.1');
    trade('BTC-USD', 2, '62370.00', '0.2');
    expect(row('BTC-USD')).toEqual(['62370.00', '-630.00', '-1.00%', '0.3']);
    expect(row('ETH-USD')).toEqual(['—', '—', '—', '—']);
    // Back to live: the session stats rule again, and live trades add only past them.
    store.replay = false;
    store.clearData();
    store.applyRestSnapshot([{ symbol: 'BTC-USD', quote: null, last_trade: { price: '65000.00', size: '1', side: 'buy', trade_id: 9, seq: 9, ts_event: 1 }, stats: { open: '64350.00', high: '1', low: '1', volume: '12.5', trades: 1 } }]);
    trade('BTC-USD', 9, '65000.00', '1');
    trade('BTC-USD', 10, '65000.00', '0.5');
    expect(row('BTC-USD')).toEqual(['65000.00', '+650.00', '+1.01%', '13.0']);
  });

  it('adds from the search, selects and removes by click', () => {
    const { root, view, handlers } = mount();
    view.setInstruments([{ symbol: 'BTC-USD' }, { symbol: 'AAPL', kind: 'equity' }, { symbol: 'MSFT', kind: 'equity' }]);
    const input = root.querySelector<HTMLInputElement>('[data-testid=symbol-search]')!;
    input.focus();
    input.value = 'aap';
    input.dispatchEvent(new Event('input'));
    const items = [...root.querySelectorAll<HTMLElement>('[data-testid=search-results] li')].map((li) => li.dataset.symbol);
    expect(items).toEqual(['AAPL']);
    input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
    expect(handlers.onAdd).toHaveBeenCalledWith('AAPL');
    (root.querySelector('tr[data-symbol="ETH-USD"] td.sym') as HTMLElement).click();
    expect(handlers.onSelect).toHaveBeenCalledWith('ETH-USD');
    (root.querySelector('tr[data-symbol="ETH-USD"] td.remove') as HTMLElement).click();
    expect(handlers.onRemove).toHaveBeenCalledWith('ETH-USD');
  });

  it('ranks prefix matches first: M lists MSFT before ATOM-USD', () => {
    const { root, view } = mount();
    view.setInstruments(['ATOM-USD', 'BTC-USD', 'kraken:MATIC-USD', 'MSFT', 'MKR-USD', 'AAPL'].map((symbol) => ({ symbol })).concat([{ symbol: 'XAU', kind: 'metal' } as never]));
    const input = root.querySelector<HTMLInputElement>('[data-testid=symbol-search]')!;
    input.focus();
    input.value = 'm';
    input.dispatchEvent(new Event('input'));
    const items = [...root.querySelectorAll<HTMLElement>('[data-testid=search-results] li')].map((li) => li.dataset.symbol);
    // Prefixes, then a part's prefix, then anywhere in the symbol, then the kind.
    expect(items).toEqual(['MSFT', 'MKR-USD', 'kraken:MATIC-USD', 'ATOM-USD', 'XAU']);
  });

  it('says why an unknown or already listed symbol cannot be added, and Enter adds nothing', () => {
    const { root, view, handlers } = mount();
    view.setInstruments([{ symbol: 'BTC-USD' }, { symbol: 'ETH-USD' }, { symbol: 'AAPL' }]);
    const input = root.querySelector<HTMLInputElement>('[data-testid=symbol-search]')!;
    input.focus();
    const typed = (text: string) => {
      input.value = text;
      input.dispatchEvent(new Event('input'));
      input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
      return root.querySelector('[data-testid=search-message]')?.textContent;
    };
    expect(typed('NOPE')).toBe('no instrument matches "NOPE"');
    expect(typed('btc-usd')).toBe('BTC-USD is already in the watchlist');
    expect(typed('-USD')).toBe('every match for "-USD" is already in the watchlist');
    expect(handlers.onAdd).not.toHaveBeenCalled();
    expect(typed('aa')).toBeUndefined();
    expect(handlers.onAdd).toHaveBeenCalledWith('AAPL');
  });
});

describe('Flasher', () => {
  it('lights a cell on/off without animation and asks for a frame when one expires', () => {
    vi.useFakeTimers();
    let now = 0;
    const request = vi.fn();
    const f = new Flasher(request, 400, () => now);
    const a = document.createElement('td');
    const b = document.createElement('td');
    f.flash(a, 'up');
    now = 200;
    f.flash(b, 'down');
    f.flash(a, 'down'); // re-flash extends and flips direction
    expect(a.className).toBe('flash-down');
    now = 600;
    vi.advanceTimersByTime(600);
    expect(request).toHaveBeenCalled();
    f.sweep();
    expect(b.className).toBe('');
    expect(a.className).toBe('');
    expect(f.active).toBe(0);
    vi.useRealTimers();
  });
});
