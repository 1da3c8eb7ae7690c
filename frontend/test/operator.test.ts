import { describe, expect, it } from 'vitest';
import { roleText } from '../src/views/operator';

describe("the operator view's node role", () => {
  it('names where each role gets its data', () => {
    expect(roleText(undefined)).toMatch(/single process/);
    expect(roleText('all')).toMatch(/single process/);
    expect(roleText('gateway')).toMatch(/gateway: data from the bus/);
    expect(roleText('ingest')).toMatch(/feeds run here and publish/);
    expect(roleText('store')).toMatch(/writes history from the bus/);
    expect(roleText('relay')).toBe('cluster role relay');
  });
});
