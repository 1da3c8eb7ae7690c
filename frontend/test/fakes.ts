// Fake transports for the stream client. Each records what the client did
// and lets a test play the server's part.

import type { EventSourceLike, FetchLike, FetchResponseLike, WebSocketLike } from '../src/stream/client';

export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  static throwOnConstruct = false;

  readyState = 0;
  sent: string[] = [];
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;
  closedByClient = false;

  constructor(
    readonly url: string,
    readonly protocols?: string[],
  ) {
    if (FakeWebSocket.throwOnConstruct) throw new Error('blocked');
    FakeWebSocket.instances.push(this);
  }

  static reset(): void {
    FakeWebSocket.instances = [];
    FakeWebSocket.throwOnConstruct = false;
  }

  static get last(): FakeWebSocket {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  /** Parsed ops the client sent. */
  get ops(): Record<string, unknown>[] {
    return this.sent.map((s) => JSON.parse(s));
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(data);
  }

  close(): void {
    this.closedByClient = true;
    this.readyState = 3;
  }

  // server side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
  /** Connection lost or refused: browsers fire error then close. */
  drop(code = 1006): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code });
  }
}

export class FakeEventSource implements EventSourceLike {
  static instances: FakeEventSource[] = [];
  onopen: EventSourceLike['onopen'] = null;
  onmessage: EventSourceLike['onmessage'] = null;
  onerror: EventSourceLike['onerror'] = null;
  closed = false;

  constructor(readonly url: string) {
    FakeEventSource.instances.push(this);
  }

  static reset(): void {
    FakeEventSource.instances = [];
  }

  static get last(): FakeEventSource {
    return FakeEventSource.instances[FakeEventSource.instances.length - 1];
  }

  close(): void {
    this.closed = true;
  }

  open(): void {
    this.onopen?.({});
  }
  push(msg: unknown): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  fail(): void {
    this.onerror?.({});
  }
}

interface PendingPoll {
  url: string;
  headers?: Record<string, string>;
  resolve(r: FetchResponseLike): void;
  reject(e: Error): void;
}

/** A fetch whose calls stay pending until the test answers them, like a held long-poll. */
export class FakePoll {
  calls: PendingPoll[] = [];

  readonly fetch: FetchLike = (url, init) =>
    new Promise((resolve, reject) => {
      this.calls.push({ url, headers: init?.headers, resolve, reject });
      init?.signal?.addEventListener('abort', () => reject(new Error('aborted')));
    });

  get last(): PendingPoll {
    return this.calls[this.calls.length - 1];
  }

  respond(body: unknown, status = 200): void {
    this.last.resolve({ ok: status >= 200 && status < 300, status, json: async () => body });
  }

  fail(): void {
    this.last.reject(new Error('network down'));
  }
}

export const clocks = (t = 1_700_000_000_000_000_000) => ({ ts_event: t, ts_recv: t, ts_send: t });
