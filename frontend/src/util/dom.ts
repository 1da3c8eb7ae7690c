/** Tiny element builder: h('div', {class: 'x'}, child, 'text'). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

/** Sets text only when it changed: cheaper than letting the browser diff. */
export function setText(el: Element, text: string): boolean {
  if (el.textContent === text) return false;
  el.textContent = text;
  return true;
}

/**
 * Green/red value flashes as a hard on/off class, not a CSS animation: an
 * animation restyles and repaints its cell on every frame for its whole
 * duration, while on/off costs two style changes. With hundreds of symbols
 * ticking that is the difference between a steady 60 fps and dropped frames.
 */
export class Flasher {
  /** Element -> expiry time; insertion order is expiry order (same duration). */
  private readonly lit = new Map<Element, number>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly requestFrame: () => void,
    private readonly durationMs = 450,
    private readonly now: () => number = () => performance.now(),
  ) {}

  flash(el: Element, dir: 'up' | 'down'): void {
    el.classList.toggle('flash-up', dir === 'up');
    el.classList.toggle('flash-down', dir === 'down');
    this.lit.delete(el);
    this.lit.set(el, this.now() + this.durationMs);
    this.arm();
  }

  /** Turns off expired flashes; call once per frame. */
  sweep(): void {
    const t = this.now();
    for (const [el, until] of this.lit) {
      if (until > t) break;
      el.classList.remove('flash-up', 'flash-down');
      this.lit.delete(el);
    }
    this.arm();
  }

  get active(): number {
    return this.lit.size;
  }

  private arm(): void {
    if (this.timer || this.lit.size === 0) return;
    const first = this.lit.values().next().value as number;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.requestFrame();
    }, Math.max(0, first - this.now()));
  }
}
