import { h, setText } from '../util/dom';

/**
 * What the server said about access, shown across the top of the page:
 * - `required`: the API needs a key and the page has none (401 without a token);
 * - `refused`: the page's key was refused (401 with one: wrong, expired or
 *   revoked; a WebSocket closed 4001 or 4003);
 * - `not-entitled`: the key works but may not use something the dashboard
 *   asked for (`not_entitled`, naming it); the rest keeps streaming.
 * The first two offer a field to enter a key (kept for the tab, then the page
 * reloads with it); the page never puts a key in a URL it requests.
 */
export type AccessState = 'ok' | 'required' | 'refused' | 'not-entitled';

export interface AccessHandlers {
  /** A key entered in the banner. */
  onKey(key: string): void;
}

export class AccessBanner {
  readonly root = h('div', { class: 'access', role: 'alert', 'data-testid': 'access', 'data-state': 'ok', hidden: true });
  private readonly title = h('strong', { 'data-testid': 'access-title' });
  private readonly message = h('span', { class: 'access-message', 'data-testid': 'access-message' });
  private readonly input = h('input', {
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'API key or token',
    'aria-label': 'Access key',
    'data-testid': 'access-key',
  });
  private readonly form = h('form', { class: 'access-form' }, this.input, h('button', { type: 'submit', class: 'primary', 'data-testid': 'access-use' }, 'Use key'));
  private state: AccessState = 'ok';
  private authDetail = '';
  /** What was denied, from `not_entitled` messages: symbols and channels, in the order they came. */
  private readonly denied = { symbols: [] as string[], channels: [] as string[] };
  /** `not_entitled` messages not in the server's usual form, as they came. */
  private readonly otherDenials: string[] = [];

  constructor(
    private readonly handlers: AccessHandlers,
    private readonly hasToken: boolean,
  ) {
    this.root.append(this.title, this.message, this.form);
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = this.input.value.trim();
      if (key) this.handlers.onKey(key);
    });
  }

  get current(): AccessState {
    return this.state;
  }

  /** The server refused the credentials (401, or a stream closed for them); `detail` says how. */
  unauthorized(detail = ''): void {
    this.authDetail = detail;
    this.set(this.hasToken ? 'refused' : 'required');
  }

  /** A call with the credentials succeeded: any 401 state is over. */
  authorized(): void {
    if (this.state === 'required' || this.state === 'refused') this.set(this.deniedText() ? 'not-entitled' : 'ok');
  }

  /**
   * The server refused something the key may not use (`not_entitled`). Its
   * message names what (`this key may not use symbols A, B; channels trades`):
   * everything denied so far is said in one sentence.
   */
  notEntitled(message: string): void {
    const m = /^this key may not use (.+)$/.exec(message.trim());
    if (m) {
      for (const part of m[1].split(';')) {
        const [, kind, list] = /^\s*(symbols|channels)\s+(.+)$/.exec(part) ?? [];
        if (!kind) continue;
        const into = this.denied[kind as 'symbols' | 'channels'];
        for (const item of list.split(',').map((x) => x.trim())) if (item && !into.includes(item)) into.push(item);
      }
    } else if (!this.otherDenials.includes(message)) {
      this.otherDenials.push(message);
    }
    if (this.state === 'ok' || this.state === 'not-entitled') this.set('not-entitled');
  }

  /** Everything denied so far, said once ('' when nothing was). */
  private deniedText(): string {
    const parts: string[] = [];
    if (this.denied.symbols.length) parts.push(`symbols ${this.denied.symbols.join(', ')}`);
    if (this.denied.channels.length) parts.push(`channels ${this.denied.channels.join(', ')}`);
    const said = parts.length ? [`this key may not use ${parts.join('; ')}`] : [];
    return [...said, ...this.otherDenials].join('; ');
  }

  private set(state: AccessState): void {
    this.state = state;
    this.root.hidden = state === 'ok';
    this.root.dataset.state = state;
    this.form.hidden = state !== 'required' && state !== 'refused';
    const origin = typeof location !== 'undefined' ? location.origin : '';
    if (state === 'required') {
      setText(this.title, 'An access key is required.');
      setText(this.message, `This gateway refuses its API without a key. Open the dashboard as ${origin}/#token=YOUR_KEY, or enter the key here:`);
    } else if (state === 'refused') {
      setText(this.title, 'The access key was refused.');
      setText(this.message, `${sentence(this.authDetail) || 'It is wrong, expired or revoked'}. Enter another key:`);
    } else if (state === 'not-entitled') {
      setText(this.title, 'Not entitled:');
      setText(this.message, `${this.deniedText()}. What it may use keeps streaming; the rest stays empty.`);
    }
  }
}

/** The server's message as a sentence's start: first letter up, no closing full stop. */
function sentence(text: string): string {
  const t = text.trim().replace(/\.$/, '');
  return t.charAt(0).toUpperCase() + t.slice(1);
}
