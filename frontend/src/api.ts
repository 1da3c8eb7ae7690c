// REST calls. Every endpoint except instruments/snapshot may not exist on a
// given server build, so callers get a result value, never an exception.

import { authHeaders } from './auth';
import type { Candle, FeedHealth, Instrument, ServerStats, SymbolSnapshot } from './protocol';

let apiToken: string | null = null;
/** Origin REST calls go to: '' (the page's own) unless several gateways are in use. */
let apiBase: () => string = () => '';

/** The access token every REST call sends as `Authorization: Bearer` (null: none). */
export function setApiToken(token: string | null): void {
  apiToken = token;
}

/**
 * Where REST calls go: a function read on every call, so that calls follow the
 * gateway the stream is using (`() => gateways.current`). Default: the page's origin.
 */
export function setApiBase(base: () => string): void {
  apiBase = base;
}

/** Told of every REST answer about access: 401 and 403 with the server's code and message, and success. */
export interface AccessListener {
  refused(status: 401 | 403, code: string, message: string): void;
  ok(): void;
}
let access: AccessListener | null = null;

export function setAccessListener(listener: AccessListener | null): void {
  access = listener;
}

export type ApiResult<T> = { ok: true; data: T } | { ok: false; status: number; missing: boolean; message: string };

export async function getJson<T>(path: string, init?: { signal?: AbortSignal; timeoutMs?: number }): Promise<ApiResult<T>> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), init?.timeoutMs ?? 10_000);
  init?.signal?.addEventListener('abort', () => ctl.abort());
  try {
    const res = await fetch(apiBase().replace(/\/$/, '') + path, { signal: ctl.signal, headers: { accept: 'application/json', ...authHeaders(apiToken) } });
    if (!res.ok) {
      // 404/405/501: the server build has no such endpoint (yet).
      const missing = res.status === 404 || res.status === 405 || res.status === 501;
      let message = `HTTP ${res.status}`;
      let code = '';
      try {
        const body = (await res.json()) as { code?: string; message?: string };
        if (body?.message) message = body.message;
        if (typeof body?.code === 'string') code = body.code;
      } catch {
        /* not JSON */
      }
      if (res.status === 401 || res.status === 403) access?.refused(res.status, code, message);
      return { ok: false, status: res.status, missing, message };
    }
    access?.ok();
    const data = (await res.json()) as T;
    return { ok: true, data };
  } catch (e) {
    return { ok: false, status: 0, missing: false, message: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
  }
}

export const api = {
  instruments: () => getJson<{ instruments: Instrument[] }>('/v1/instruments'),
  snapshot: (symbols: string[]) =>
    getJson<{ snapshots: SymbolSnapshot[] }>(`/v1/snapshot?symbols=${symbols.map(encodeURIComponent).join(',')}`),
  candles: (symbol: string, interval: string, fromNs: bigint, toNs: bigint, signal?: AbortSignal) =>
    getJson<{ candles: Candle[] }>(
      `/v1/candles?symbol=${encodeURIComponent(symbol)}&interval=${interval}&from=${fromNs}&to=${toNs}`,
      { signal },
    ),
  feeds: () => getJson<{ feeds: FeedHealth[]; role?: string }>('/v1/feeds', { timeoutMs: 4_000 }),
  stats: () => getJson<ServerStats>('/v1/stats', { timeoutMs: 4_000 }),
};

/** Milliseconds to integer nanoseconds, as a BigInt so the query string is exact. */
export function msToNs(ms: number): bigint {
  return BigInt(Math.floor(ms)) * 1_000_000n;
}
