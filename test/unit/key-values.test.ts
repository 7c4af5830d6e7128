import { describe, expect, it } from 'vitest';
import { parseKeyValues } from '../../src/cli/key-values.js';

describe('KEY=VALUE flags', () => {
  it('splits at the first =, keeps empty values and = inside values, last one wins', () => {
    expect(
      parseKeyValues(['a=1', 'b=', 'c=x=y', 'a=2', 'org.opencontainers.image.title=t'], {
        flag: '--label',
      }),
    ).toEqual({ a: '2', b: '', c: 'x=y', 'org.opencontainers.image.title': 't' });
  });

  it.each([
    ['novalue', {}, '--annotation "novalue": expected KEY=VALUE'],
    ['=v', {}, '--annotation "=v": "" is not a valid name'],
    ['a b=v', {}, '--annotation "a b=v": "a b" is not a valid name'],
    [
      'BAD-NAME=1',
      { key: /^[A-Za-z_]\w*$/ },
      '--annotation "BAD-NAME=1": "BAD-NAME" is not a valid name',
    ],
  ])('refuses %j naming the flag and the value', (pair, rules, message) => {
    expect(() => parseKeyValues([pair], { flag: '--annotation', ...rules })).toThrow(message);
  });

  it('takes a bare KEY from the environment when allowed, and skips it when unset', () => {
    const env = { FROM_ENV: 'yes' };
    expect(parseKeyValues(['FROM_ENV', 'UNSET', 'X=1'], { flag: '--build-arg', env })).toEqual({
      FROM_ENV: 'yes',
      X: '1',
    });
  });
});
