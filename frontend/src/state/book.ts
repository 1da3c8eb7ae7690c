import type { Level } from '../protocol';
import { signDec } from '../util/decimal';

/**
 * An L2 book. Levels are keyed by the price's numeric value so "100.5" and
 * "100.50" are one level (distinct short decimals never collide as doubles);
 * what is shown is always the server's own strings.
 */
export class OrderBook {
  readonly bids = new Map<number, Level>();
  readonly asks = new Map<number, Level>();
  seq = 0;

  reset(bids: Level[], asks: Level[], seq: number): void {
    this.bids.clear();
    this.asks.clear();
    this.apply(bids, asks, seq);
  }

  /** Applies levels; size "0" (or any zero decimal) removes a level. */
  apply(bids: Level[], asks: Level[], seq: number): void {
    for (const l of bids) setLevel(this.bids, l);
    for (const l of asks) setLevel(this.asks, l);
    this.seq = seq;
  }

  clear(): void {
    this.bids.clear();
    this.asks.clear();
    this.seq = 0;
  }

  get empty(): boolean {
    return this.bids.size === 0 && this.asks.size === 0;
  }

  /** Best-first levels: highest bids, lowest asks. */
  top(depth: number): { bids: Level[]; asks: Level[] } {
    return { bids: sorted(this.bids, -1, depth), asks: sorted(this.asks, 1, depth) };
  }
}

function setLevel(side: Map<number, Level>, level: Level): void {
  const key = Number(level[0]);
  if (!Number.isFinite(key)) return;
  if (signDec(level[1]) === 0) side.delete(key);
  else side.set(key, [level[0], level[1]]);
}

function sorted(side: Map<number, Level>, dir: 1 | -1, depth: number): Level[] {
  const keys = [...side.keys()].sort((a, b) => dir * (a - b));
  return keys.slice(0, depth).map((k) => side.get(k)!);
}
