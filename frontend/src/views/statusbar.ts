import type { ConnState } from '../stream/client';
import { hostPort } from '../stream/gateways';
import type { MarketStore } from '../state/store';
import { type LatencyFigure, clockResolutionMs, latencyFigure } from '../state/latency';
import { fmtTimeSec, zoneLabel } from '../util/clock';
import { h, setText } from '../util/dom';
import { fmtRate } from '../util/format';

/** Bottom bar: connection state, end-to-end latency, throughput. Refreshed a few times a second. */
export class StatusBar {
  private readonly state = h('span', { class: 'pill', 'data-testid': 'conn-state', 'data-state': 'connecting' }, 'connecting');
  private readonly detail = h('span', { class: 'dim' });
  /** host:port of the gateway in use, shown when there are several to choose from. */
  private readonly gateway = h('span', { class: 'gateway num', 'data-testid': 'gateway', hidden: true });
  private gateways: readonly string[] = [];
  /** The gateway the stream was last live on, and the last move from one to another. */
  private liveGateway: string | null = null;
  private moved: { from: string; to: string; atMs: number } | null = null;
  private readonly lat = h('span', { class: 'num', 'data-testid': 'latency' });
  private readonly send = h('span', { class: 'num', 'data-testid': 'latency-send' });
  private readonly rate = h('span', { class: 'num', 'data-testid': 'msg-rate' });
  private readonly gaps = h('span', { class: 'num' });
  private readonly clock = h('span', { class: 'num dim', 'data-testid': 'status-clock' });
  private conn: ConnState | null = null;
  private mode: 'live' | 'replay' = 'live';
  /** Latency is measured with Date.now(): whole milliseconds (finer only if this browser's clock is). */
  private readonly resolutionMs = clockResolutionMs(() => Date.now(), 200_000);

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
  ) {
    const item = (label: string, value: HTMLElement, title: string) => h('span', { class: 'stat', title }, h('span', { class: 'label' }, label), value);
    root.append(
      this.state,
      this.detail,
      this.gateway,
      item('event→screen', this.lat, 'median of (drawn at − ts_event): exchange time to this screen'),
      item('send→screen', this.send, 'median of (drawn at − ts_send): gateway publish to this screen'),
      item('msg/s', this.rate, 'updates applied per second'),
      item('gaps', this.gaps, 'sequence gaps announced or detected'),
      h('span', { class: 'spacer' }),
      this.clock,
    );
  }

  setConn(s: ConnState, mode: 'live' | 'replay' = this.mode): void {
    this.conn = s;
    this.mode = mode;
    if (s.phase === 'live') {
      if (this.liveGateway !== null && this.liveGateway !== s.gateway) this.moved = { from: this.liveGateway, to: s.gateway, atMs: Date.now() };
      this.liveGateway = s.gateway;
    }
    this.render();
  }

  /** The gateways the dashboard may use; with more than one, the one in use is shown. */
  setGateways(all: readonly string[]): void {
    this.gateways = all;
    this.render();
  }

  private label(): string {
    const s = this.conn;
    if (this.mode !== 'replay') return s?.label ?? 'connecting';
    const info = this.store.replayInfo;
    if (info?.state === 'ended') return 'replay ended';
    if (s?.phase === 'live') return info?.state === 'paused' ? 'replay paused' : 'replay';
    return s?.label ?? 'replay';
  }

  render(): void {
    const s = this.conn;
    const label = this.label();
    setText(this.state, label);
    this.state.dataset.state = label.replace(/ /g, '-');
    setText(this.detail, s ? `${s.transport}${s.attempt ? ` · retry ${s.attempt}` : ''}` : '');
    this.renderGateway(s);
    const st = this.store;
    const now = Date.now();
    const common = {
      offsetKnown: st.clockOffset.uncertaintyMs !== null,
      sinceLastSampleMs: st.lastSampleMs === null ? null : now - st.lastSampleMs,
      resolutionMs: this.resolutionMs,
      replay: st.replay,
      streamUp: st.streamUpSinceMs !== null,
    };
    const within = st.clockOffset.uncertaintyMs;
    const clock =
      within === null
        ? s && s.transport !== 'ws'
          ? `no clock sync over ${s.transport} (no ping round trips): figures are withheld`
          : 'waiting for the first ping round trip to measure the clock offset'
        : `corrected to the server's clock by ${fmtSigned(st.clockOffset.valueMs)} ms (ping bound ±${within.toFixed(1)} ms); clock resolution ${this.resolutionMs} ms`;
    this.figure(this.lat, latencyFigure({ medianMs: st.latencyEvent.median(), ...common }), `median of (drawn at − ts_event); ${clock}`);
    this.figure(this.send, latencyFigure({ medianMs: st.latencySend.median(), ...common }), `median of (drawn at − ts_send); ${clock}`);
    setText(this.rate, fmtRate(st.rate.perSecond()));
    setText(this.gaps, String(st.gaps));
    setText(this.clock, `${fmtTimeSec(now)} ${zoneLabel()}`);
  }

  /**
   * `gw 127.0.0.1:8081`; for a while after a move to another gateway, where
   * from, in the colour of a recovery (a move is the normal way to survive a
   * lost gateway, not a fault).
   */
  private renderGateway(s: ConnState | null): void {
    const el = this.gateway;
    el.hidden = this.gateways.length <= 1 || !s;
    if (el.hidden || !s) return;
    const moved = this.moved && this.moved.to === s.gateway && s.phase === 'live' && Date.now() - this.moved.atMs < MOVED_SHOWN_MS ? this.moved : null;
    setText(el, `gw ${hostPort(s.gateway)}${moved ? ` ← ${hostPort(moved.from)}` : ''}`);
    el.dataset.gateway = hostPort(s.gateway);
    el.dataset.moved = String(moved !== null);
    const i = this.gateways.indexOf(s.gateway);
    const title = `gateway ${i + 1} of ${this.gateways.length} (${this.gateways.map(hostPort).join(', ')}); a lost gateway's streams resume on the next one`;
    el.title = moved ? `${title}. Moved here from ${hostPort(moved.from)} at ${fmtTimeSec(moved.atMs)}: resumed by sequence, a normal recovery` : title;
  }

  private figure(el: HTMLElement, f: LatencyFigure, title: string): void {
    setText(el, f.text);
    el.dataset.state = f.state;
    el.classList.toggle('stale', f.state === 'stale');
    el.title = f.why ? `${f.why}. ${title}` : title;
  }
}

/** How long a move to another gateway stays marked in the status bar. */
const MOVED_SHOWN_MS = 30_000;

function fmtSigned(ms: number): string {
  return `${ms >= 0 ? '+' : '−'}${Math.abs(ms).toFixed(1)}`;
}
