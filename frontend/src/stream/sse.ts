// A `text/event-stream` parser, as the HTML standard's EventSource parses
// one ("Server-sent events", "Event stream interpretation"), for SSE read
// with fetch(): EventSource cannot send an Authorization header, fetch can.
//
// Text arrives in arbitrary chunks (a chunk may end inside a line, between
// the CR and LF of a CRLF, or inside an event); feed() takes them as they come
// and calls onEvent for every event completed by a blank line. Lines end with
// CRLF, LF or CR. `data:` lines of one event are joined with LF; `event:`
// names its type (default `message`); `id:` sets the last event id (kept
// across events until the server sets another; an id containing NUL is
// ignored, an empty one clears it); `retry:` with only digits sets the
// reconnection time; lines starting with `:` are comments (keep-alives). An
// event not ended by a blank line when the stream ends is dropped. A leading
// byte-order mark is removed by TextDecoder, which is what callers decode with.

export interface SseEvent {
  /** The `event:` field, `message` when none. */
  type: string;
  /** The `data:` lines joined with LF. */
  data: string;
  /** The last event id as of this event (an earlier event's when this one has no `id:`). */
  lastEventId: string;
}

export class SseParser {
  /** The last event id as of the last dispatched event: what a reconnect sends as `Last-Event-ID`. */
  lastEventId = '';
  /** The last `retry:` value, in milliseconds (null: none sent). */
  retryMs: number | null = null;
  /** Comment lines seen (keep-alives): a sign of life that carries no event. */
  comments = 0;

  private buf = '';
  /** The previous chunk ended with CR: an LF starting this one belongs to it. */
  private afterCr = false;
  private data = '';
  private hasData = false;
  private type = '';
  private idBuffer = '';

  /** `lastEventId`: the id a reconnect resumed from, kept until the server sends another (as browsers do). */
  constructor(
    private readonly onEvent: (e: SseEvent) => void,
    lastEventId = '',
  ) {
    this.lastEventId = this.idBuffer = lastEventId;
  }

  /** Takes the next piece of decoded text. */
  feed(text: string): void {
    if (!text) return;
    let s = text;
    if (this.afterCr) {
      this.afterCr = false;
      if (s.charCodeAt(0) === 10) s = s.slice(1);
    }
    let buf = this.buf + s;
    let start = 0;
    // The next CR and LF at or after `start` (-1: none), each searched again
    // only once passed, so a chunk of many LF-only lines is scanned once.
    let lf = -2;
    let cr = -2;
    for (;;) {
      if (lf !== -1 && lf < start) lf = buf.indexOf('\n', start);
      if (cr !== -1 && cr < start) cr = buf.indexOf('\r', start);
      // The next line end: CR or LF, whichever comes first.
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (end < 0) break;
      const line = buf.slice(start, end);
      if (buf.charCodeAt(end) === 13) {
        if (end + 1 < buf.length) {
          start = buf.charCodeAt(end + 1) === 10 ? end + 2 : end + 1;
        } else {
          // CR at the end of what we have: an LF may start the next chunk.
          this.afterCr = true;
          start = end + 1;
        }
      } else {
        start = end + 1;
      }
      this.line(line);
    }
    buf = buf.slice(start);
    this.buf = buf;
  }

  /** The stream ended: an unfinished line and event are dropped (as EventSource does). */
  end(): void {
    this.buf = '';
    this.afterCr = false;
    this.data = '';
    this.hasData = false;
    this.type = '';
  }

  private line(line: string): void {
    if (line === '') return this.dispatch();
    if (line.charCodeAt(0) === 58 /* : */) {
      this.comments++;
      return;
    }
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon < 0) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 32 /* space */ ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (field) {
      case 'data':
        this.data = this.hasData ? `${this.data}\n${value}` : value;
        this.hasData = true;
        return;
      case 'event':
        this.type = value;
        return;
      case 'id':
        if (!value.includes('\0')) this.idBuffer = value;
        return;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retryMs = Number(value);
        return;
      default:
        return; // unknown fields are ignored
    }
  }

  private dispatch(): void {
    // The id is taken at every blank line, even one that ends no data.
    this.lastEventId = this.idBuffer;
    if (!this.hasData) {
      this.type = '';
      return;
    }
    const e: SseEvent = { type: this.type || 'message', data: this.data, lastEventId: this.lastEventId };
    this.data = '';
    this.hasData = false;
    this.type = '';
    this.onEvent(e);
  }
}

/** Whether a response's Content-Type is an event stream (parameters such as `charset` allowed). */
export function isEventStream(contentType: string | null | undefined): boolean {
  return typeof contentType === 'string' && contentType.split(';')[0].trim().toLowerCase() === 'text/event-stream';
}
