import { describe, expect, it } from 'vitest';
import { type SseEvent, SseParser, isEventStream } from '../src/stream/sse';

/** Parses `chunks` fed one after another; returns the events and the parser. */
function parse(chunks: string[]): { events: SseEvent[]; parser: SseParser } {
  const events: SseEvent[] = [];
  const parser = new SseParser((e) => events.push(e));
  for (const c of chunks) parser.feed(c);
  return { events, parser };
}

/** Every way of cutting `text` in two, and in single characters. */
function splits(text: string): string[][] {
  const out: string[][] = [[text], [...text]];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

const STREAM =
  ': keep-alive\n' +
  'id: @7,BTC-USD~quotes~1\n' +
  'data: {"type":"snapshot","seq":1}\n' +
  '\n' +
  'id: @7,BTC-USD~quotes~2\r\n' +
  'data: {"type":"batch",\r\n' +
  'data: "seq":2}\r\n' +
  '\r\n' +
  'event: notice\r' +
  'data:no space\r' +
  '\r' +
  ':\n' +
  'data: last\n\n';

const EXPECTED: SseEvent[] = [
  { type: 'message', data: '{"type":"snapshot","seq":1}', lastEventId: '@7,BTC-USD~quotes~1' },
  { type: 'message', data: '{"type":"batch",\n"seq":2}', lastEventId: '@7,BTC-USD~quotes~2' },
  { type: 'notice', data: 'no space', lastEventId: '@7,BTC-USD~quotes~2' },
  { type: 'message', data: 'last', lastEventId: '@7,BTC-USD~quotes~2' },
];

describe('SseParser', () => {
  it('parses events, ids, types, multi-line data, comments and every line ending', () => {
    const { events, parser } = parse([STREAM]);
    expect(events).toEqual(EXPECTED);
    expect(parser.lastEventId).toBe('@7,BTC-USD~quotes~2');
    expect(parser.comments).toBe(2);
  });

  it('gives the same events however the text is cut into chunks (lines, CRLF and events split)', () => {
    for (const chunks of splits(STREAM)) {
      const { events, parser } = parse(chunks);
      expect(events, JSON.stringify(chunks)).toEqual(EXPECTED);
      expect(parser.lastEventId).toBe('@7,BTC-USD~quotes~2');
    }
  });

  it('a CRLF split across chunks is one line end, not two (no extra blank line)', () => {
    // Were the LF taken as a second line end, the first event would be
    // dispatched before its second data line.
    const { events } = parse(['data: a\r', '\ndata: b\r', '\n\r', '\n']);
    expect(events).toEqual([{ type: 'message', data: 'a\nb', lastEventId: '' }]);
    // CR then CR is a blank line.
    expect(parse(['data: x\r', '\r']).events.map((e) => e.data)).toEqual(['x']);
  });

  it('waits for the blank line: an event is not dispatched before it, nor a half line', () => {
    const events: SseEvent[] = [];
    const p = new SseParser((e) => events.push(e));
    p.feed('data: {"a":');
    p.feed('1}\n');
    expect(events).toHaveLength(0);
    p.feed('\n');
    expect(events.map((e) => e.data)).toEqual(['{"a":1}']);
  });

  it('drops an event the stream ends in the middle of', () => {
    const events: SseEvent[] = [];
    const p = new SseParser((e) => events.push(e));
    p.feed('data: whole\n\ndata: half');
    p.end();
    p.feed('\n\n'); // a later stream starts clean
    expect(events.map((e) => e.data)).toEqual(['whole']);
  });

  it('keeps the last id across events, takes it even from an event without data, clears it on an empty id', () => {
    const { events, parser } = parse(['id: 1\ndata: a\n\n', 'data: b\n\n', 'id: 2\n\n']);
    expect(events.map((e) => e.lastEventId)).toEqual(['1', '1']);
    expect(parser.lastEventId).toBe('2');
    expect(parse(['id: 3\ndata: a\n\nid\ndata: b\n\n']).parser.lastEventId).toBe('');
    // An id with NUL is ignored; an id not yet ended by a blank line is not the last id yet.
    expect(parse(['id: 4\n\nid: a\0b\n\n']).parser.lastEventId).toBe('4');
    expect(parse(['id: 5\n\nid: 6\ndata: x\n']).parser.lastEventId).toBe('5');
  });

  it('field syntax: one leading space removed, no colon means an empty value, unknown fields ignored', () => {
    const { events } = parse(['data:  two spaces\nfoo: bar\ndata\ndata:\n\n']);
    expect(events).toEqual([{ type: 'message', data: ' two spaces\n\n', lastEventId: '' }]);
    // `data:` alone is an event with empty data; no data line at all is none.
    expect(parse(['data:\n\n']).events.map((e) => e.data)).toEqual(['']);
    expect(parse(['event: x\n\n', 'data: y\n\n']).events).toEqual([{ type: 'message', data: 'y', lastEventId: '' }]);
  });

  it('retry: digits only', () => {
    expect(parse(['retry: 1500\n\n']).parser.retryMs).toBe(1500);
    expect(parse(['retry: 1500\nretry: 2s\nretry: -1\n\n']).parser.retryMs).toBe(1500);
    expect(parse(['data: x\n\n']).parser.retryMs).toBeNull();
  });

  it('keeps up with a large chunk of many events', () => {
    const n = 20_000;
    const text = Array.from({ length: n }, (_, i) => `id: ${i}\ndata: {"seq":${i}}\n\n`).join('');
    const t0 = performance.now();
    const { events, parser } = parse([text]);
    expect(events).toHaveLength(n);
    expect(parser.lastEventId).toBe(String(n - 1));
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it('decoded from bytes split inside a UTF-8 character and after a BOM', () => {
    const bytes = new TextEncoder().encode('\uFEFFdata: €uro\n\n');
    const decoder = new TextDecoder();
    const events: SseEvent[] = [];
    const p = new SseParser((e) => events.push(e));
    for (let i = 0; i < bytes.length; i++) p.feed(decoder.decode(bytes.subarray(i, i + 1), { stream: true }));
    expect(events.map((e) => e.data)).toEqual(['€uro']);
  });
});

describe('isEventStream', () => {
  it('matches the media type, with or without parameters', () => {
    expect(isEventStream('text/event-stream')).toBe(true);
    expect(isEventStream('Text/Event-Stream; charset=utf-8')).toBe(true);
    expect(isEventStream('application/json')).toBe(false);
    expect(isEventStream(null)).toBe(false);
  });
});
