import { describe, expect, it } from 'vitest';
import { compareText, formatAge } from '../../src/text.js';

describe('formatAge', () => {
  it('says seconds, minutes, hours or days', () => {
    expect([0, 45_000, 3 * 60_000, 5 * 3_600_000 + 1, 2 * 86_400_000].map(formatAge)).toEqual([
      '0s',
      '45s',
      '3m',
      '5h',
      '2d',
    ]);
  });

  it('says 0s for a time in the future (a clock a little ahead)', () => {
    expect(formatAge(-5_000)).toBe('0s');
  });
});

describe('compareText', () => {
  it('orders by code unit, upper case before lower, whatever the locale', () => {
    expect(['b', 'a', 'B', 'a-1', 'a.1'].sort(compareText)).toEqual(['B', 'a', 'a-1', 'a.1', 'b']);
  });
});
