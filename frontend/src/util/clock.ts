// One clock for the whole screen. The user picks UTC (the default: the
// server's stamps, the exchange's and the operator's logs all speak it) or the
// browser's local time zone; every time on screen goes through these functions.

export type ClockZone = 'utc' | 'local';
export const CLOCK_ZONES: readonly ClockZone[] = ['utc', 'local'];

let current: ClockZone = 'utc';
const listeners = new Set<(z: ClockZone) => void>();

export function clockZone(): ClockZone {
  return current;
}

export function setClockZone(z: ClockZone): void {
  if (z === current) return;
  current = z;
  for (const l of listeners) l(z);
}

export function onClockZone(l: (z: ClockZone) => void): void {
  listeners.add(l);
}

interface Parts {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  s: number;
  ms: number;
}

function parts(ms: number, z: ClockZone): Parts {
  const t = new Date(ms);
  return z === 'utc'
    ? { y: t.getUTCFullYear(), mo: t.getUTCMonth() + 1, d: t.getUTCDate(), h: t.getUTCHours(), mi: t.getUTCMinutes(), s: t.getUTCSeconds(), ms: t.getUTCMilliseconds() }
    : { y: t.getFullYear(), mo: t.getMonth() + 1, d: t.getDate(), h: t.getHours(), mi: t.getMinutes(), s: t.getSeconds(), ms: t.getMilliseconds() };
}

const p2 = (n: number) => String(n).padStart(2, '0');
const p3 = (n: number) => String(n).padStart(3, '0');

/** Short name of the zone as shown next to times: "UTC", or the local offset ("UTC−05:00"). */
export function zoneLabel(z: ClockZone = current, atMs: number = Date.now()): string {
  if (z === 'utc') return 'UTC';
  const off = -new Date(atMs).getTimezoneOffset();
  const sign = off < 0 ? '−' : '+';
  const a = Math.abs(off);
  return `UTC${sign}${p2(Math.floor(a / 60))}:${p2(a % 60)}`;
}

/** HH:MM:SS.mmm (24-hour) */
export function fmtTime(ms: number, z: ClockZone = current): string {
  const p = parts(ms, z);
  return `${p2(p.h)}:${p2(p.mi)}:${p2(p.s)}.${p3(p.ms)}`;
}

/** HH:MM:SS (24-hour) */
export function fmtTimeSec(ms: number, z: ClockZone = current): string {
  const p = parts(ms, z);
  return `${p2(p.h)}:${p2(p.mi)}:${p2(p.s)}`;
}

/** YYYY-MM-DD */
export function fmtDate(ms: number, z: ClockZone = current): string {
  const p = parts(ms, z);
  return `${p.y}-${p2(p.mo)}-${p2(p.d)}`;
}

/** YYYY-MM-DD HH:MM:SS: what the replay form shows and reads back. */
export function fmtDateTime(ms: number, z: ClockZone = current): string {
  return `${fmtDate(ms, z)} ${fmtTimeSec(ms, z)}`;
}

/**
 * Reads "YYYY-MM-DD HH:MM[:SS[.mmm]]" (a "T" also separates) in the zone;
 * a bare "HH:MM[:SS]" takes its date from `dayOfMs`. Null when unreadable.
 */
export function parseDateTime(text: string, z: ClockZone = current, dayOfMs?: number): number | null {
  const m = /^(?:(\d{4})-(\d{2})-(\d{2})[ T])?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(text.trim());
  if (!m) return null;
  let y: number, mo: number, d: number;
  if (m[1] !== undefined) {
    [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  } else {
    if (dayOfMs === undefined) return null;
    const p = parts(dayOfMs, z);
    [y, mo, d] = [p.y, p.mo, p.d];
  }
  const h = Number(m[4]);
  const mi = Number(m[5]);
  const sec = Number(m[6] ?? 0);
  const msec = Number((m[7] ?? '0').padEnd(3, '0'));
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59) return null;
  const t = z === 'utc' ? Date.UTC(y, mo - 1, d, h, mi, sec, msec) : new Date(y, mo - 1, d, h, mi, sec, msec).getTime();
  if (!Number.isFinite(t)) return null;
  // Reject dates that rolled over (2026-02-31) and local times a DST jump skips.
  const back = parts(t, z);
  if (back.d !== d || back.h !== h || back.mi !== mi) return null;
  return t;
}

/**
 * Chart time-axis label for a bar time (seconds since the epoch): a date where
 * the bars are days or the tick marks a new day/month/year, a time otherwise.
 * `tickType` follows lightweight-charts' TickMarkType: 0 year, 1 month,
 * 2 day of month, 3 time, 4 time with seconds.
 */
export function fmtAxisTick(timeSec: number, tickType: number, intervalSec: number, z: ClockZone = current): string {
  const ms = timeSec * 1000;
  const p = parts(ms, z);
  if (tickType === 0) return String(p.y);
  if (tickType === 1) return `${p.y}-${p2(p.mo)}`;
  if (tickType === 2 || intervalSec >= 86_400) return `${p2(p.mo)}-${p2(p.d)}`;
  if (tickType === 4 || intervalSec < 60) return fmtTimeSec(ms, z);
  return `${p2(p.h)}:${p2(p.mi)}`;
}

/** Crosshair label for a bar: a date for daily bars, date and time otherwise. */
export function fmtBarTime(timeSec: number, intervalSec: number, z: ClockZone = current): string {
  const ms = timeSec * 1000;
  if (intervalSec >= 86_400) return fmtDate(ms, z);
  return `${fmtDate(ms, z)} ${intervalSec < 60 ? fmtTimeSec(ms, z) : fmtTimeSec(ms, z).slice(0, 5)}`;
}
