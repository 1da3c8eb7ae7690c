import type { ConnState } from '../stream/client';
import type { MarketStore } from '../state/store';
import { h, setText } from '../util/dom';
import { fmtMs, fmtRate } from '../util/format';

/** Bottom bar: connection state, end-to-end latency, throughput. Refreshed a few times a second. */
export class StatusBar {
  private readonly state = h('span', { class: 'pill', 'data-testid': 'conn-state', 'data-state': 'connecting' }, 'connecting');
  private readonly detail = h('span', { class: 'dim' });
  private readonly lat = h('span', { class: 'num', 'data-testid': 'latency' });
  private readonly send = h('span', { class: 'num', 'data-testid': 'latency-send' });
  private readonly rate = h('span', { class: 'num', 'data-testid': 'msg-rate' });
  private readonly gaps = h('span', { class: 'num' });
  private readonly clock = h('span', { class: 'num dim' });
  private conn: ConnState | null = null;
  private mode: 'live' | 'replay' = 'live';

  constructor(
    root: HTMLElement,
    private readonly store: MarketStore,
  ) {
    const item = (label: string, value: HTMLElement, title: string) => h('span', { class: 'stat', title }, h('span', { class: 'label' }, label), value);
    root.append(
      this.state,
      this.detail,
      item('event→screen', this.lat, 'median of now − ts_event (exchange time to this browser)'),
      item('send→screen', this.send, 'median of now − ts_send (gateway publish to this browser)'),
      item('msg/s', this.rate, 'updates applied per second'),
      item('gaps', this.gaps, 'sequence gaps announced or detected'),
      h('span', { class: 'spacer' }),
      this.clock,
    );
  }

  setConn(s: ConnState, mode: 'live' | 'replay' = this.mode): void {
    this.conn = s;
    this.mode = mode;
    this.render();
  }

  render(): void {
    const s = this.conn;
    const label = this.mode === 'replay' ? (s?.phase === 'live' ? 'replay' : s?.label ?? 'replay') : s?.label ?? 'connecting';
    setText(this.state, label);
    this.state.dataset.state = label;
    setText(this.detail, s ? `${s.transport}${s.attempt ? ` · retry ${s.attempt}` : ''}` : '');
    const st = this.store;
    setText(this.lat, st.replay ? 'n/a' : fmtMs(st.latencyEvent.median()));
    setText(this.send, st.replay ? 'n/a' : fmtMs(st.latencySend.median()));
    const within = st.clockOffset.uncertaintyMs;
    const clock =
      within === null
        ? "this browser's clock is taken as the server's until a ping comes back"
        : `corrected to the server's clock by ${fmtSigned(st.clockOffset.valueMs)} ms (ping bound ±${within.toFixed(1)} ms)`;
    this.lat.title = `median of now − ts_event (exchange time to this browser); ${clock}`;
    this.send.title = `median of now − ts_send (gateway publish to this browser); ${clock}`;
    setText(this.rate, fmtRate(st.rate.perSecond()));
    setText(this.gaps, String(st.gaps));
    setText(this.clock, new Date().toISOString().slice(11, 19) + ' UTC');
  }
}

function fmtSigned(ms: number): string {
  return `${ms >= 0 ? '+' : '−'}${Math.abs(ms).toFixed(1)}`;
}
