// Fake transports for the stream client. Each records what the client did
// and lets a test play the server's part.

import type { FetchLike, FetchResponseLike, WebSocketLike } from '../src/stream/client';

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

/**
 * An SSE stream read with fetch(): created by FakePoll's fetch for `/v1/sse`
 * URLs. The test answers it (open), writes events (push, write), and drops
 * (fail) or ends (end) it; `aborted` says the client closed it.
 */
export class FakeSse {
  static instances: FakeSse[] = [];
  /** Answer with no readable body (a browser that cannot stream a response). */
  static noBody = false;

  readonly headers: Record<string, string>;
  aborted = false;
  private answered = false;
  private resolve!: (r: FetchResponseLike) => void;
  private reject!: (e: Error) => void;
  private ctl: ReadableStreamDefaultController<Uint8Array> | null = null;
  readonly response: Promise<FetchResponseLike>;

  constructor(
    readonly url: string,
    init?: { signal?: AbortSignal; headers?: Record<string, string> },
  ) {
    this.headers = init?.headers ?? {};
    this.response = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    init?.signal?.addEventListener('abort', () => {
      this.aborted = true;
      const e = new Error('aborted');
      if (!this.answered) this.reject(e);
      try {
        this.ctl?.error(e);
      } catch {
        /* already closed */
      }
    });
    FakeSse.instances.push(this);
  }

  static reset(): void {
    FakeSse.instances = [];
    FakeSse.noBody = false;
  }

  static get last(): FakeSse {
    return FakeSse.instances[FakeSse.instances.length - 1];
  }

  /** Closed by the client (its fetch aborted). */
  get closed(): boolean {
    return this.aborted;
  }

  /** Answers the request: a 200 event stream by default; otherwise `status` with `body` as JSON. */
  open(status = 200, contentType = 'text/event-stream', body: unknown = null): void {
    this.answered = true;
    const headers = { get: (n: string) => (n.toLowerCase() === 'content-type' ? contentType : null) };
    if (status !== 200) {
      this.resolve({ ok: status >= 200 && status < 300, status, headers, json: async () => body, body: null });
      return;
    }
    const stream = new ReadableStream<Uint8Array>({ start: (c) => void (this.ctl = c) });
    this.resolve({ ok: true, status, headers, json: async () => body, body: FakeSse.noBody ? null : stream });
  }

  /** Raw text as the server writes it. */
  write(text: string): void {
    this.ctl!.enqueue(new TextEncoder().encode(text));
  }

  /** One event: its data the message as JSON, with an `id:` when given. */
  push(msg: unknown, id?: string): void {
    this.write(`${id !== undefined ? `id: ${id}\n` : ''}data: ${typeof msg === 'string' ? msg : JSON.stringify(msg)}\n\n`);
  }

  /** The connection fails: refused before an answer, or dropped while streaming. */
  fail(): void {
    if (!this.answered) {
      this.answered = true;
      this.reject(new Error('network down'));
    } else this.ctl?.error(new Error('network down'));
  }

  /** The server ends the stream. */
  end(): void {
    this.ctl?.close();
  }
}

interface PendingPoll {
  url: string;
  headers?: Record<string, string>;
  resolve(r: FetchResponseLike): void;
  reject(e: Error): void;
}

/**
 * A fetch whose calls stay pending until the test answers them, like a held
 * long-poll. `/v1/sse` requests go to FakeSse instead.
 */
export class FakePoll {
  calls: PendingPoll[] = [];

  readonly fetch: FetchLike = (url, init) => {
    if (new URL(url).pathname === '/v1/sse') return new FakeSse(url, init).response;
    return new Promise((resolve, reject) => {
      this.calls.push({ url, headers: init?.headers, resolve, reject });
      init?.signal?.addEventListener('abort', () => reject(new Error('aborted')));
    });
  };

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
