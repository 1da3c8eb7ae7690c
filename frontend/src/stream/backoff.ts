export interface BackoffOptions {
  /** First retry delay. */
  baseMs: number;
  /** Upper bound for any delay, jitter included. */
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 250, maxMs: 10_000, factor: 2 };

/**
 * Exponential backoff with "equal jitter": half the capped delay is fixed, the
 * other half random. The fixed half keeps a restarting server from being hit
 * by a tight loop; the random half spreads thousands of dashboards that lost
 * the same server apart so they do not reconnect in lock-step.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const capped = Math.min(opts.maxMs, opts.baseMs * Math.pow(opts.factor, Math.max(0, attempt)));
  return Math.round(capped / 2 + random() * (capped / 2));
}
