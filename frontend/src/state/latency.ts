// Rules for the event→screen and send→screen figures. A sample is taken when
// the update is drawn (in the animation frame that paints it), as this
// browser's clock corrected by the ping-measured offset, minus the server's
// stamp. Figures are shown only once that offset is known, never below zero,
// at the resolution of the clock that measured them, and marked stale when no
// update has been drawn for a while.

/** No sample for this long and the figure is marked stale. */
export const LATENCY_STALE_MS = 2_000;

/**
 * The smallest step of a clock, measured by reading it until it moves
 * (`Date.now()`: 1 ms; `performance.now()` is coarsened to 0.1 ms or 5 µs).
 */
export function clockResolutionMs(read: () => number, tries = 1_000): number {
  let best = Infinity;
  let prev = read();
  for (let i = 0; i < tries; i++) {
    const t = read();
    if (t !== prev) {
      best = Math.min(best, t - prev);
      prev = t;
    }
  }
  return Number.isFinite(best) && best > 0 ? best : 1;
}

/** Decimals that a figure measured with this resolution deserves: 0 for 1 ms, 1 for 0.1 ms, … */
export function decimalsFor(resolutionMs: number): number {
  if (!(resolutionMs > 0) || resolutionMs >= 1) return 0;
  return Math.min(3, Math.ceil(-Math.log10(resolutionMs) - 1e-9));
}

export interface LatencyInput {
  /** Median of the samples (null: none yet). */
  medianMs: number | null;
  /** The server-minus-browser offset has been measured (a pong came back). */
  offsetKnown: boolean;
  /** Time since the last sample was taken (null: none yet). */
  sinceLastSampleMs: number | null;
  resolutionMs: number;
  /** Replay plays old stamps: no latency to speak of. */
  replay?: boolean;
  /** false while the stream is down: the last figure is stale at once. */
  streamUp?: boolean;
}

export type LatencyState = 'ok' | 'pending' | 'stale' | 'na';

export interface LatencyFigure {
  text: string;
  state: LatencyState;
  why: string;
}

export function fmtLatencyValue(ms: number, resolutionMs: number): string {
  const d = decimalsFor(resolutionMs);
  const step = Math.pow(10, -d);
  if (ms >= 1_000) return `${(ms / 1_000).toFixed(ms >= 10_000 ? 0 : 1)}s`;
  const rounded = Math.round(ms / step) * step;
  // Below the clock's step (or below zero: clocks that disagree within their
  // bound) the honest figure is "less than one step".
  if (rounded < step) return `<${step.toFixed(d)}ms`;
  return `${rounded.toFixed(d)}ms`;
}

export function latencyFigure(i: LatencyInput): LatencyFigure {
  if (i.replay) return { text: 'n/a', state: 'na', why: 'replay: stamps are historical' };
  if (!i.offsetKnown) return { text: '—', state: 'pending', why: "waiting for a ping round trip to measure the server's clock" };
  if (i.medianMs === null || i.sinceLastSampleMs === null) return { text: '—', state: 'pending', why: 'no update drawn yet' };
  const value = fmtLatencyValue(i.medianMs, i.resolutionMs);
  if (i.streamUp === false || i.sinceLastSampleMs > LATENCY_STALE_MS) {
    const why = i.streamUp === false ? 'the stream is down' : 'no update drawn recently';
    return { text: `${value} · ${Math.floor(i.sinceLastSampleMs / 1_000)}s old`, state: 'stale', why: `${why}: this is the last figure, not a current one` };
  }
  return { text: value, state: 'ok', why: '' };
}
