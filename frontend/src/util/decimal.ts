// Exact decimal arithmetic on the wire's decimal strings, via BigInt. Used
// where the dashboard derives a displayed number (change, volume) so that it
// shows what the server would, never a float artefact like 0.30000000000000004.

export interface Dec {
  units: bigint;
  scale: number;
}

export function parseDec(s: string): Dec | null {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(s.trim());
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const frac = m[3] ?? '';
  const units = BigInt((m[2] || '0') + frac);
  return { units: m[1] === '-' ? -units : units, scale: frac.length };
}

function rescale(d: Dec, scale: number): bigint {
  return d.units * 10n ** BigInt(scale - d.scale);
}

export function formatDec(d: Dec, scale = d.scale): string {
  const units = scale >= d.scale ? rescale(d, scale) : d.units / 10n ** BigInt(d.scale - scale);
  const neg = units < 0n;
  const digits = (neg ? -units : units).toString().padStart(scale + 1, '0');
  const int = digits.slice(0, digits.length - scale);
  const frac = scale > 0 ? '.' + digits.slice(digits.length - scale) : '';
  return (neg ? '-' : '') + int + frac;
}

function combine(a: string, b: string, sign: 1n | -1n): string | null {
  const x = parseDec(a);
  const y = parseDec(b);
  if (!x || !y) return null;
  const scale = Math.max(x.scale, y.scale);
  return formatDec({ units: rescale(x, scale) + sign * rescale(y, scale), scale });
}

/** a + b, exact, at the larger of the two scales. */
export function addDec(a: string, b: string): string | null {
  return combine(a, b, 1n);
}

/** a - b, exact, at the larger of the two scales. */
export function subDec(a: string, b: string): string | null {
  return combine(a, b, -1n);
}

/** Sign of a decimal string: -1, 0 or 1 (0 for unparsable). */
export function signDec(a: string): -1 | 0 | 1 {
  const d = parseDec(a);
  if (!d || d.units === 0n) return 0;
  return d.units < 0n ? -1 : 1;
}
