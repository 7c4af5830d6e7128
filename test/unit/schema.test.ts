import { describe, expect, it } from 'vitest';
import { intSetting, listSetting, loadConfig, parsedSetting } from '../../src/config/loader.js';
import { ConfigError } from '../../src/errors.js';
import { parseManifestSpec } from '../../src/oci/manifest-spec.js';
import {
  array,
  Invalid,
  literal,
  object,
  oneOf,
  optional,
  string,
  withDefault,
} from '../../src/schema.js';

/** The Invalid a schema throws for `value`, described as users read it. */
function refusal(schema: (value: unknown) => unknown, value: unknown): string {
  try {
    schema(value);
  } catch (err) {
    expect(err).toBeInstanceOf(Invalid);
    return (err as Invalid).describe('doc');
  }
  throw new Error(`${JSON.stringify(value)} was accepted`);
}

describe('schemas', () => {
  const host = object(
    {
      name: string({ min: 1 }),
      arch: oneOf(['amd64', 'arm64']),
      labels: withDefault(array(string()), []),
      note: optional(string()),
      version: literal(1),
    },
    { strict: true },
  );

  it('read a valid document, filling defaults and leaving absent optionals out', () => {
    expect(host({ name: 'a', arch: 'arm64', version: 1 })).toEqual({
      name: 'a',
      arch: 'arm64',
      labels: [],
      version: 1,
    });
  });

  it.each([
    [null, 'doc: expected a mapping'],
    [{ name: '', arch: 'amd64', version: 1 }, 'name: must not be empty'],
    [{ name: 'a', arch: 's390x', version: 1 }, 'arch: expected one of amd64, arm64'],
    [{ name: 'a', arch: 'amd64', version: 2 }, 'version: expected 1'],
    [{ name: 'a', arch: 'amd64', version: 1, labels: ['x', 3] }, 'labels.1: expected a string'],
    [{ name: 'a', arch: 'amd64', version: 1, extra: true }, 'extra: unknown key'],
  ])('refuse %o naming the offending value: %s', (value, message) => {
    expect(refusal(host, value)).toContain(message);
  });

  it('count a list and its items', () => {
    const list = array(object({ image: string({ min: 1 }) }), { min: 1 });
    expect(refusal(list, [])).toBe('doc: expected at least 1 item(s)');
    expect(refusal(list, [{ image: 'a' }, {}])).toBe('1.image: expected a string');
  });
});

describe('settings', () => {
  const shape = {
    port: intSetting({ min: 1, max: 65535, default: 7465 }),
    hosts: listSetting((item) => {
      if (item.includes(' ')) throw new Error(`"${item}" has a space`);
    }),
    mode: parsedSetting((text) => {
      if (text !== 'fast' && text !== 'safe') throw new Error('expected fast or safe');
      return text;
    }, 'safe'),
  };

  it('take flag and env strings and defaults', () => {
    expect(loadConfig(shape, { flags: { port: '80' }, env: { BRAID_HOSTS: 'a, b,,c' } })).toEqual({
      port: 80,
      hosts: ['a', 'b', 'c'],
      mode: 'safe',
    });
    expect(loadConfig(shape, { flags: { hosts: ['x'] }, env: { BRAID_MODE: 'fast' } })).toEqual({
      port: 7465,
      hosts: ['x'],
      mode: 'fast',
    });
  });

  it.each([
    [{ port: '0' }, {}, 'invalid config --port: must be at least 1, got "0"'],
    [{ port: 'http' }, {}, 'invalid config --port: expected an integer, got "http"'],
    [{ port: '1.5' }, {}, 'invalid config --port: expected an integer, got "1.5"'],
    [{}, { BRAID_HOSTS: 'a b' }, 'invalid config BRAID_HOSTS: "a b" has a space'],
    [{ mode: 'slow' }, {}, 'invalid config --mode: expected fast or safe, got "slow"'],
  ])('refuse flags %o env %o in one line', (flags, env, message) => {
    const load = () => loadConfig(shape, { flags, env });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(message);
  });
});

describe('a manifest-tool spec', () => {
  it('is refused with the path of the offending value', () => {
    expect(() => parseManifestSpec('image: r/a:1\nmanifests: []\n', 'spec.yaml')).toThrow(
      'spec.yaml: manifests: expected at least 1 item(s)',
    );
    expect(() =>
      parseManifestSpec(
        'image: r/a:1\nmanifests:\n  - image: r/a@sha256:00\n    platform: { os: linux }\n',
        'spec.yaml',
      ),
    ).toThrow('spec.yaml: manifests.0.platform.architecture: expected a string');
    expect(() => parseManifestSpec('image: r/a:1\nmanifest: []\n', 'spec.yaml')).toThrow(
      'spec.yaml: manifest: unknown key (known: image, tags, manifests)',
    );
    expect(() => parseManifestSpec('- a\n', 'spec.yaml')).toThrow(
      'spec.yaml: spec: expected a mapping',
    );
  });
});
