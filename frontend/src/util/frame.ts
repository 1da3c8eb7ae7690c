/**
 * Coalesces any number of requests into one callback per animation frame.
 * Stream handlers call request() on every update; the DOM is touched at most
 * once per frame, which is what keeps 1,000 updates/s from dropping frames.
 */
export class FrameScheduler {
  private pending = false;

  constructor(
    private readonly render: () => void,
    private readonly raf: (cb: () => void) => unknown = (cb) =>
      typeof requestAnimationFrame === 'function' ? requestAnimationFrame(cb) : setTimeout(cb, 16),
  ) {}

  request(): void {
    if (this.pending) return;
    this.pending = true;
    this.raf(() => {
      this.pending = false;
      this.render();
    });
  }
}
