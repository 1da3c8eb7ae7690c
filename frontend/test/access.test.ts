// @vitest-environment happy-dom
import { describe, expect, it } from 'vitest';
import { AccessBanner } from '../src/views/access';

const text = (b: AccessBanner) => b.root.textContent ?? '';
const form = (b: AccessBanner) => b.root.querySelector('form')!;

describe('AccessBanner', () => {
  it('is hidden until the server says something about access', () => {
    const b = new AccessBanner({ onKey: () => {} }, false);
    expect(b.root.hidden).toBe(true);
    expect(b.root.dataset.state).toBe('ok');
  });

  it('without a key: says one is required, how to give it, and takes one typed in', () => {
    const keys: string[] = [];
    const b = new AccessBanner({ onKey: (k) => keys.push(k) }, false);
    b.unauthorized();
    expect(b.root.hidden).toBe(false);
    expect(b.root.dataset.state).toBe('required');
    expect(text(b)).toMatch(/access key is required/);
    expect(text(b)).toMatch(/#token=YOUR_KEY/);
    expect(form(b).hidden).toBe(false);
    b.root.querySelector('input')!.value = '  tw_k_s  ';
    form(b).dispatchEvent(new Event('submit', { cancelable: true }));
    expect(keys).toEqual(['tw_k_s']);
    // An empty field is no key.
    b.root.querySelector('input')!.value = ' ';
    form(b).dispatchEvent(new Event('submit', { cancelable: true }));
    expect(keys).toHaveLength(1);
  });

  it('with a key the server refuses: says so, and why when known; a later success clears it', () => {
    const b = new AccessBanner({ onKey: () => {} }, true);
    b.unauthorized('the key is not valid, or was revoked.');
    expect(b.root.dataset.state).toBe('refused');
    expect(b.root.querySelector('[data-testid=access-message]')!.textContent).toBe('The key is not valid, or was revoked. Enter another key:');
    b.authorized();
    expect(b.root.hidden).toBe(true);
  });

  it('not entitled: everything denied in one sentence, without a key form; a 401 takes precedence', () => {
    const b = new AccessBanner({ onKey: () => {} }, true);
    b.notEntitled('this key may not use channels trades');
    b.notEntitled('this key may not use channels book');
    b.notEntitled('this key may not use channels trades');
    b.notEntitled('this key may not use symbols ETH-USD, AAPL; channels candles');
    expect(b.root.dataset.state).toBe('not-entitled');
    expect(form(b).hidden).toBe(true);
    expect(b.root.querySelector('[data-testid=access-message]')!.textContent).toBe(
      'this key may not use symbols ETH-USD, AAPL; channels trades, book, candles. What it may use keeps streaming; the rest stays empty.',
    );
    b.notEntitled('something else');
    expect(text(b)).toMatch(/candles; something else\./);
    b.unauthorized();
    expect(b.root.dataset.state).toBe('refused');
    b.notEntitled('this key may not use channels replay');
    expect(b.root.dataset.state).toBe('refused');
    b.authorized();
    expect(b.root.dataset.state).toBe('not-entitled');
    expect(text(b)).toMatch(/replay/);
  });
});
