import { describe, expect, it } from 'vitest';
import {
  MAX_SECRET_BYTES,
  MAX_SECRETS,
  SecretVault,
  checkSecrets,
  type BuildSecretValue,
} from '../../src/coordinator/secret-vault.js';
import { BraidError } from '../../src/errors.js';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const secret = (id: string, value = 'v'): BuildSecretValue => ({ id, value: bytes(value) });

function refusal(secrets: readonly BuildSecretValue[]): BraidError {
  try {
    checkSecrets(secrets);
  } catch (err) {
    if (err instanceof BraidError) return err;
    throw err;
  }
  throw new Error('checkSecrets accepted what it should refuse');
}

describe('checkSecrets', () => {
  it('returns the ids of good secrets in the order given', () => {
    expect(checkSecrets([secret('npm_token'), secret('pip.conf'), secret('A-1')])).toEqual([
      'npm_token',
      'pip.conf',
      'A-1',
    ]);
    expect(checkSecrets([])).toEqual([]);
  });

  it.each(['', 'has space', 'a/b', 'tok=1', 'ü', 'x'.repeat(129)])(
    'refuses the id %j, naming it',
    (id) => {
      const err = refusal([secret(id)]);
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toContain(`secret id "${id.slice(0, 140)}"`);
      expect(err.message).toContain('1 to 128 of A-Z a-z 0-9 . _ -');
    },
  );

  it('cuts a very long bad id short in the message', () => {
    const err = refusal([secret('y'.repeat(10_000))]);
    expect(err.message.length).toBeLessThan(300);
  });

  it('refuses an id given twice', () => {
    const err = refusal([secret('tok', 'one'), secret('other'), secret('tok', 'two')]);
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe('secret id "tok" is given twice');
  });

  it('takes a secret of exactly 500 KiB and refuses one byte more, naming id and size but never the value', () => {
    const marker = 'hunter2-';
    const atCap = bytes(marker.repeat(MAX_SECRET_BYTES / marker.length));
    expect(atCap.length).toBe(500 * 1024);
    expect(checkSecrets([{ id: 'big', value: atCap }])).toEqual(['big']);

    const over = new Uint8Array(MAX_SECRET_BYTES + 1);
    over.set(atCap);
    over[MAX_SECRET_BYTES] = 0x21;
    const err = refusal([{ id: 'big', value: over }]);
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toBe(
      'secret "big" is 512001 bytes; BuildKit takes at most 512000 (500 KiB)',
    );
    expect(err.message).not.toContain('hunter2');
  });

  it(`refuses more than ${MAX_SECRETS} secrets`, () => {
    const many = Array.from({ length: MAX_SECRETS + 1 }, (_, i) => secret(`s${i}`));
    expect(refusal(many).message).toBe(`65 secrets given; at most ${MAX_SECRETS}`);
    expect(checkSecrets(many.slice(0, MAX_SECRETS))).toHaveLength(MAX_SECRETS);
  });
});

describe('SecretVault', () => {
  it('hands back what a build was given, as its own copy', () => {
    const vault = new SecretVault();
    const given = [secret('tok', 'abc'), secret('pip', 'xyz')];
    vault.keep('b1', given);
    // The request's buffers belong to the transport, which may reuse them.
    given[0]?.value.fill(0);
    const kept = vault.get('b1');
    expect(kept?.map((s) => [s.id, new TextDecoder().decode(s.value)])).toEqual([
      ['tok', 'abc'],
      ['pip', 'xyz'],
    ]);
    expect(vault.size).toBe(1);
  });

  it('has nothing for a build it never kept: what a restarted coordinator sees', () => {
    const vault = new SecretVault();
    vault.keep('b1', [secret('tok')]);
    expect(vault.get('b2')).toBeUndefined();
  });

  it('keeps nothing for a build without secrets', () => {
    const vault = new SecretVault();
    vault.keep('b1', []);
    expect(vault.get('b1')).toBeUndefined();
    expect(vault.size).toBe(0);
  });

  it('zeroes the bytes when it forgets a build, and forgets only that build', () => {
    const vault = new SecretVault();
    vault.keep('b1', [secret('tok', 'abc'), secret('pip', 'xyz')]);
    vault.keep('b2', [secret('tok', 'def')]);
    const held = vault.get('b1') ?? [];
    expect(held).toHaveLength(2);

    vault.forget('b1');
    for (const s of held) expect([...s.value]).toEqual([0, 0, 0]);
    expect(vault.get('b1')).toBeUndefined();
    expect(new TextDecoder().decode(vault.get('b2')?.[0]?.value)).toBe('def');
    expect(vault.size).toBe(1);

    // Idempotent: a build ends once, but cleanup may run twice.
    vault.forget('b1');
    vault.forget('never-kept');
    expect(vault.size).toBe(1);
  });
});
