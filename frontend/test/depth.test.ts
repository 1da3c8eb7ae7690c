// @vitest-environment happy-dom
import { describe, expect, it } from 'vitest';
import { MarketStore } from '../src/state/store';
import { DepthView, cumulative, sizeScale } from '../src/views/depth';

describe('depth totals', () => {
  it('are exact running sums, all at the sizes\' decimals', () => {
    const levels: [string, string][] = [['10', '0.1'], ['9', '0.2'], ['8', '0.70000'], ['7', '1500.5']];
    expect(sizeScale(levels)).toBe(5);
    // A float sum would give 0.30000000000000004; the old format mixed 0.300, 1.00 and 1501.
    expect(cumulative(levels, 5)).toEqual(['0.10000', '0.30000', '1.00000', '1501.50000']);
    expect(cumulative([['1', '3'], ['2', '4']], 0)).toEqual(['3', '7']);
  });

  it('the Total column reads in one format on both sides', () => {
    const root = document.createElement('div');
    const store = new MarketStore();
    store.track('BTC-USD');
    store.select('BTC-USD');
    const clocks = { ts_event: 1, ts_recv: 1, ts_send: 1 };
    store.apply({ kind: 'snapshot', msg: { type: 'snapshot', symbol: 'BTC-USD', channel: 'book', seq: 1, data: { bids: [['100.00', '0.00500'], ['99.50', '2.50000']], asks: [['100.50', '1200.00000']] }, ...clocks } });
    new DepthView(root, store).render();
    const totals = [...root.querySelectorAll('tbody tr td:nth-child(3)')].map((td) => td.textContent).filter(Boolean);
    expect(totals.sort()).toEqual(['0.00500', '1200.00000', '2.50500']);
  });
});
