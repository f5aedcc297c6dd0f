import { describe, expect, it } from 'vitest';
import { bearerMatches } from '../../src/http/auth.js';

describe('command token check', () => {
  const token = 'a-long-enough-command-token';

  it('accepts exactly the configured bearer token', () => {
    expect(bearerMatches(`Bearer ${token}`, token)).toBe(true);
    expect(bearerMatches(`bearer ${token}`, token)).toBe(true);
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['wrong scheme', `Basic ${token}`],
    ['prefix of the token', `Bearer ${token.slice(0, -1)}`],
    ['token with a suffix', `Bearer ${token}x`],
    ['empty bearer', 'Bearer '],
    ['two tokens', `Bearer ${token} ${token}`],
  ])('refuses a %s header', (_, header) => {
    expect(bearerMatches(header, token)).toBe(false);
  });
});
