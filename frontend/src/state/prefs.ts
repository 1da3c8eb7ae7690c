// What the user chose, kept across reloads. localStorage can be missing or
// full (private mode, quotas): every access is best effort.

import { CLOCK_ZONES, type ClockZone } from '../util/clock';
import { INTERVALS, type Interval } from './candles';

const KEY = 'tickwire.prefs.v1';

export interface Prefs {
  watchlist: string[] | null;
  selected: string | null;
  interval: Interval;
  /** Every time on screen: UTC (default) or the browser's zone. */
  clock: ClockZone;
}

export function loadPrefs(storage: Pick<Storage, 'getItem'> | undefined = globalThis.localStorage): Prefs {
  const prefs: Prefs = { watchlist: null, selected: null, interval: '1m', clock: 'utc' };
  try {
    const raw = JSON.parse(storage?.getItem(KEY) ?? 'null') as Partial<Prefs> | null;
    if (raw && Array.isArray(raw.watchlist)) prefs.watchlist = raw.watchlist.filter((s): s is string => typeof s === 'string');
    if (raw && typeof raw.selected === 'string') prefs.selected = raw.selected;
    if (raw && INTERVALS.includes(raw.interval as Interval)) prefs.interval = raw.interval as Interval;
    if (raw && CLOCK_ZONES.includes(raw.clock as ClockZone)) prefs.clock = raw.clock as ClockZone;
  } catch {
    /* corrupt or unavailable: defaults */
  }
  return prefs;
}

export function savePrefs(p: Prefs, storage: Pick<Storage, 'setItem'> | undefined = globalThis.localStorage): void {
  try {
    storage?.setItem(KEY, JSON.stringify(p));
  } catch {
    /* quota or disabled storage: the choice just is not remembered */
  }
}
