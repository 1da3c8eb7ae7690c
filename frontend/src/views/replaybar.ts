import type { MarketStore, ReplayInfo } from '../state/store';
import { fmtDateTime, parseDateTime, zoneLabel } from '../util/clock';
import { h, setText } from '../util/dom';

export interface ReplayBarHandlers {
  onPause(): void;
  onResume(): void;
  onSpeed(speed: number | 'max'): void;
  /** Exchange time to seek to, ms inside [from, to). */
  onSeek(atMs: number): void;
  onExit(): void;
}

const STEPS = 1000;

/**
 * The replay workstation's transport: play/pause, speed, a timeline of the
 * chosen range (drag to seek), a time to type, the replay clock and progress.
 * Shown across the top of the screen while a replay is on.
 */
export class ReplayBar {
  readonly root: HTMLElement;
  private readonly toggle = h('button', { type: 'button', class: 'primary', 'data-testid': 'replay-toggle', 'aria-pressed': 'false' }, 'Pause');
  private readonly speed = h(
    'select',
    { 'data-testid': 'replay-bar-speed', 'aria-label': 'Replay speed' },
    ...['0.5', '1', '2', '5', '10', '60', '600', 'max'].map((s) => h('option', { value: s }, s === 'max' ? 'max' : `${s}×`)),
  );
  private readonly timeline = h('input', { type: 'range', min: 0, max: STEPS, step: 1, value: 0, class: 'timeline', 'data-testid': 'replay-timeline', 'aria-label': 'Replay position' });
  private readonly clock = h('span', { class: 'num replay-clock', 'data-testid': 'replay-clock' }, '—');
  private readonly progress = h('span', { class: 'num', 'data-testid': 'replay-progress' }, '0%');
  private readonly stateText = h('span', { class: 'replay-state', 'data-testid': 'replay-state' }, 'connecting');
  private readonly range = h('span', { class: 'dim num', 'data-testid': 'replay-range' });
  private readonly seekInput = h('input', { type: 'text', spellcheck: 'false', class: 'seek', placeholder: 'seek to HH:MM:SS', 'data-testid': 'replay-seek-input', 'aria-label': 'Seek to time' });
  private readonly seekBtn = h('button', { type: 'button', 'data-testid': 'replay-seek-go' }, 'Seek');
  private readonly exit = h('button', { type: 'button', 'data-testid': 'replay-exit' }, 'Back to live');
  private dragging = false;

  constructor(
    private readonly store: MarketStore,
    handlers: ReplayBarHandlers,
  ) {
    this.root = h(
      'div',
      { class: 'replaybar', 'data-testid': 'replay-bar', hidden: true, role: 'region', 'aria-label': 'Replay controls' },
      h('span', { class: 'badge' }, 'REPLAY'),
      this.toggle,
      this.speed,
      this.clock,
      h('div', { class: 'timeline-wrap' }, this.timeline, this.range),
      this.progress,
      this.seekInput,
      this.seekBtn,
      this.stateText,
      this.exit,
    );
    this.toggle.addEventListener('click', () => {
      const st = this.store.replayInfo?.state;
      if (st === 'paused') handlers.onResume();
      else if (st === 'playing') handlers.onPause();
    });
    this.speed.addEventListener('change', () => handlers.onSpeed(this.speed.value === 'max' ? 'max' : Number(this.speed.value)));
    this.timeline.addEventListener('input', () => {
      this.dragging = true;
      const at = this.timelineMs();
      if (at !== null) setText(this.clock, `${fmtDateTime(at)} ${zoneLabel()}`);
    });
    this.timeline.addEventListener('change', () => {
      this.dragging = false;
      const at = this.timelineMs();
      if (at !== null) handlers.onSeek(at);
    });
    const seek = () => {
      const info = this.store.replayInfo;
      if (!info) return;
      const at = parseDateTime(this.seekInput.value, undefined, info.atMs);
      if (at === null || at < info.fromMs || at >= info.toMs) {
        this.seekInput.setCustomValidity('a time inside the replay range');
        this.seekInput.reportValidity();
        return;
      }
      this.seekInput.setCustomValidity('');
      handlers.onSeek(at);
    };
    this.seekBtn.addEventListener('click', seek);
    this.seekInput.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') seek();
    });
    this.exit.addEventListener('click', () => handlers.onExit());
  }

  show(on: boolean, speed?: number | 'max'): void {
    this.root.hidden = !on;
    if (speed !== undefined) this.speed.value = String(speed);
  }

  private timelineMs(): number | null {
    const info = this.store.replayInfo;
    if (!info) return null;
    const frac = Number(this.timeline.value) / STEPS;
    // Seek targets must lie inside [from, to).
    return Math.min(info.toMs - 1, info.fromMs + frac * (info.toMs - info.fromMs));
  }

  render(): void {
    const info: ReplayInfo | null = this.store.replayInfo;
    if (!info) {
      setText(this.stateText, 'connecting…');
      return;
    }
    const span = Math.max(1, info.toMs - info.fromMs);
    const frac = Math.min(1, Math.max(0, (info.atMs - info.fromMs) / span));
    if (!this.dragging) {
      this.timeline.value = String(Math.round(frac * STEPS));
      setText(this.clock, `${fmtDateTime(info.atMs)} ${zoneLabel()}`);
    }
    this.clock.dataset.atMs = String(Math.round(info.atMs));
    setText(this.progress, `${Math.floor(frac * 100)}%`);
    setText(this.range, `${fmtDateTime(info.fromMs)} → ${fmtDateTime(info.toMs)}`);
    const speed = info.speed === 'max' ? 'max' : `${info.speed}×`;
    const text =
      info.state === 'ended'
        ? `finished${info.events !== undefined ? ` · ${info.events} events` : ''}`
        : info.state === 'failed'
          ? 'connection lost'
          : info.state === 'paused'
            ? 'paused'
            : info.state === 'playing'
              ? `playing ${speed}`
              : 'connecting…';
    setText(this.stateText, text);
    this.stateText.dataset.state = info.state;
    this.root.dataset.state = info.state;
    const live = info.state === 'playing' || info.state === 'paused';
    setText(this.toggle, info.state === 'paused' ? 'Play' : 'Pause');
    this.toggle.setAttribute('aria-pressed', String(info.state === 'paused'));
    this.toggle.disabled = this.speed.disabled = this.timeline.disabled = this.seekInput.disabled = this.seekBtn.disabled = !live;
    if (document.activeElement !== this.speed && live) this.speed.value = String(info.speed);
  }
}
