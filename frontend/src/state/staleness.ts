// When shown data stops being current. A price is stale when the stream that
// carries it is down, when the feed behind it is stale (GET /v1/feeds), or,
// after a reconnect, until its first fresh update; a book also when the server
// invalidated it (`book_invalidated`) until its new snapshot. The age shown is
// the time since the data was last refreshed.

export type StaleReason = 'stream down' | 'feed stale' | 'book invalidated' | 'awaiting fresh data';

export interface StaleInput {
  nowMs: number;
  /** When this data was last refreshed (undefined: never). */
  lastDataMs: number | undefined;
  /** Since when the stream has been up; null while it is down. */
  streamUpSinceMs: number | null;
  /** The feed that publishes this data is not live. */
  feedDown?: boolean;
  /** The book was invalidated and no snapshot has replaced it yet. */
  invalidated?: boolean;
}

export interface Staleness {
  stale: boolean;
  /** Age of what is shown, ms (null if nothing was ever shown). */
  ageMs: number | null;
  reason: StaleReason | null;
}

export function staleness(i: StaleInput): Staleness {
  const ageMs = i.lastDataMs === undefined ? null : Math.max(0, i.nowMs - i.lastDataMs);
  let reason: StaleReason | null = null;
  if (i.streamUpSinceMs === null) reason = 'stream down';
  else if (i.invalidated) reason = 'book invalidated';
  else if (i.feedDown) reason = 'feed stale';
  else if (i.lastDataMs !== undefined && i.lastDataMs < i.streamUpSinceMs) reason = 'awaiting fresh data';
  // Nothing shown yet: nothing to mark (the view shows "—").
  if (ageMs === null) return { stale: false, ageMs, reason: null };
  return { stale: reason !== null, ageMs, reason };
}

/** A feed from GET /v1/feeds that is not live, or has been silent for `silentMs`. */
export function feedIsDown(f: { state: string; last_message_age_ms?: number | null }, silentMs = 5_000): boolean {
  if (f.state !== 'live') return true;
  return typeof f.last_message_age_ms === 'number' && f.last_message_age_ms > silentMs;
}

/** "0.4s", "12s", "3m 05s", "2h 10m": how old shown data is. */
export function fmtAge(ms: number): string {
  if (ms < 1_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(ms / 1_000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** At most four characters, for a badge: "0.4s", "12s", "3m", "2h", "5d". */
export function fmtAgeShort(ms: number): string {
  if (ms < 1_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(ms / 1_000);
  if (s < 60) return `${s}s`;
  if (s < 3_600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3_600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}
