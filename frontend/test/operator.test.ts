import { describe, expect, it } from 'vitest';
import { chartPath, chartScale, roleText } from '../src/views/operator';

describe("the operator view's node role", () => {
  it('names where each role gets its data', () => {
    expect(roleText(undefined)).toMatch(/single process/);
    expect(roleText('all')).toMatch(/single process/);
    expect(roleText('gateway')).toMatch(/gateway: data from the bus/);
    expect(roleText('ingest')).toMatch(/feeds run here and publish/);
    expect(roleText('store')).toMatch(/writes history from the bus/);
    expect(roleText('relay')).toBe('cluster role relay');
  });
});

describe("the operator view's latency charts", () => {
  it('scales to whole decades around the values shown', () => {
    expect(chartScale([])).toEqual([10, 1_000]);
    expect(chartScale([75, 480])).toEqual([10, 1_000]);
    expect(chartScale([100])).toEqual([100, 1_000]);
    expect(chartScale([10, 10_000_000])).toEqual([10, 10_000_000]);
  });

  it('breaks the line where an interval had no samples; a lone point is a short tick', () => {
    // 0..100 ms across 100 units, 10 µs..1 ms over a height of 12 (1 unit margin each side).
    const pts = [
      { atMs: -5, us: 50 }, // before the window: left out
      { atMs: 10, us: 10 },
      { atMs: 20, us: 1_000 },
      { atMs: 30, us: null },
      { atMs: 40, us: 100 },
    ];
    expect(chartPath(pts, 0, 100, 10, 1_000, 100, 12)).toBe('M10.0,11.0L20.0,1.0M40.0,6.0L41.5,6.0');
    expect(chartPath([{ atMs: 50, us: null }], 0, 100, 10, 1_000, 100, 12)).toBe('');
  });
});
