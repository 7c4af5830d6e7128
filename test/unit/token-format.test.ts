import { describe, expect, it } from 'vitest';
import { newToken, tokenHash, tokenHint, tokenKindOf } from '../../src/coordinator/token-format.js';

const COUNTING = () => Uint8Array.from({ length: 32 }, (_, i) => i);

describe('token format', () => {
  it('spells a token as braid_KIND_ and 32 bytes of lower-case base32 (RFC 4648)', () => {
    expect(newToken('api', COUNTING)).toBe(
      'braid_api_aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq',
    );
    expect(newToken('join')).toMatch(/^braid_join_[a-z2-7]{52}$/);
    expect(newToken('api')).not.toBe(newToken('api'));
  });

  it('knows the kind of a well-formed token and nothing else', () => {
    expect(tokenKindOf(newToken('api'))).toBe('api');
    expect(tokenKindOf(newToken('join'))).toBe('join');
    for (const bad of [
      '',
      'braid_api_',
      'braid_admin_' + 'a'.repeat(52),
      'braid_api_' + 'A'.repeat(52),
      `${newToken('api')}x`,
    ]) {
      expect(tokenKindOf(bad)).toBeUndefined();
    }
  });

  it('stores a sha256 and shows a hint too short to use', () => {
    const token = newToken('api', COUNTING);
    expect(tokenHash(token)).toBe(
      '164ac2380b747e6155ea659cd64f2cefb132e2f4ac167f44b2e91dcf678f771c',
    );
    expect(tokenHint(token)).toBe('braid_api_aaaq…');
    expect(tokenHint('not a token')).toBe('braid_…');
  });
});
