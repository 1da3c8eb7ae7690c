/** Median of the last `size` samples; cheap to add, sorted only when read. */
export class RollingMedian {
  private readonly buf: Float64Array;
  private n = 0;
  private i = 0;

  constructor(size = 512) {
    this.buf = new Float64Array(size);
  }

  add(v: number): void {
    if (!Number.isFinite(v)) return;
    this.buf[this.i] = v;
    this.i = (this.i + 1) % this.buf.length;
    if (this.n < this.buf.length) this.n++;
  }

  get count(): number {
    return this.n;
  }

  median(): number | null {
    if (this.n === 0) return null;
    const s = this.buf.slice(0, this.n).sort();
    const mid = this.n >> 1;
    return this.n % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  }

  clear(): void {
    this.n = this.i = 0;
  }
}

/**
 * The server's clock minus this browser's, from ping round trips: each pong's
 * server time against the midpoint of its round trip, which is off by at most
 * half the round trip. Of the last `size` samples, the one with the shortest
 * round trip is the best estimate (a slow trip says least about the clocks).
 * The clocks are taken to agree unless that sample proves otherwise: the
 * correction is the smallest one within its bounds, so two clocks that agree
 * (a pong stamped between its ping and its arrival) are never corrected, and a
 * late pong cannot turn latencies negative.
 */
export class ClockOffset {
  private readonly samples: { rttMs: number; offsetMs: number }[] = [];

  constructor(private readonly size = 8) {}

  add(rttMs: number, offsetMs: number): void {
    if (!Number.isFinite(rttMs) || !Number.isFinite(offsetMs) || rttMs < 0) return;
    this.samples.push({ rttMs, offsetMs });
    if (this.samples.length > this.size) this.samples.shift();
  }

  /** Milliseconds to add to `Date.now()` to read the server's clock; 0 until a pong arrives. */
  get valueMs(): number {
    let best: { rttMs: number; offsetMs: number } | null = null;
    for (const s of this.samples) if (!best || s.rttMs < best.rttMs) best = s;
    if (!best) return 0;
    const beyond = Math.abs(best.offsetMs) - best.rttMs / 2;
    return beyond > 0 ? Math.sign(best.offsetMs) * beyond : 0;
  }

  /** Half the best round trip: how far off `valueMs` can be (null until a pong arrives). */
  get uncertaintyMs(): number | null {
    return this.samples.length ? Math.min(...this.samples.map((s) => s.rttMs)) / 2 : null;
  }
}

/** Events per second over the last second, in four 250 ms buckets. */
export class RateMeter {
  private readonly buckets = [0, 0, 0, 0];
  private current = 0;
  private bucketStart = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  private roll(): void {
    const t = this.now();
    if (this.bucketStart === 0) this.bucketStart = t;
    let steps = Math.floor((t - this.bucketStart) / 250);
    if (steps <= 0) return;
    this.bucketStart += steps * 250;
    steps = Math.min(steps, 4);
    for (let k = 0; k < steps; k++) {
      this.current = (this.current + 1) % 4;
      this.buckets[this.current] = 0;
    }
  }

  add(n = 1): void {
    this.roll();
    this.buckets[this.current] += n;
  }

  perSecond(): number {
    this.roll();
    return this.buckets.reduce((a, b) => a + b, 0);
  }
}
