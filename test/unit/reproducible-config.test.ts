import { describe, expect, it } from 'vitest';
import { resolveSourceDateEpoch } from '../../src/cli/buildx/source-date-epoch.js';
import { epochTime, reproducibleConfig } from '../../src/oci/reproducible-config.js';

const EPOCH = 1_700_000_000;

describe('reproducibleConfig', () => {
  const engine = {
    architecture: 'amd64',
    config: {
      Cmd: ['sh', '-c', 'a && b <x>'],
      Labels: { 'io.braid.build-id': 'b1', 'io.braid.job-id': 'b1-1', team: 'web' },
    },
    created: '2026-12-07T16:00:00.123456789Z',
    history: [
      { created: '2020-01-01T00:00:00Z', created_by: 'base' },
      { created: '2026-12-07T15:59:59Z', created_by: 'RUN make' },
      { created_by: 'no time' },
    ],
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: ['sha256:old1', 'sha256:old2'] },
  };

  it('sets created to the epoch, clamps later history times, names the new layers, drops run labels', () => {
    const { config, bytes } = reproducibleConfig(engine, ['sha256:new1', 'sha256:new2'], EPOCH, [
      'io.braid.build-id',
      'io.braid.job-id',
    ]);
    expect(config.created).toBe('2023-11-14T22:13:20Z');
    expect(config.history.map((h) => h.created)).toEqual([
      '2020-01-01T00:00:00Z',
      '2023-11-14T22:13:20Z',
      '2023-11-14T22:13:20Z',
    ]);
    expect(config.rootfs.diff_ids).toEqual(['sha256:new1', 'sha256:new2']);
    expect(config.config.Labels).toEqual({ team: 'web' });
    // Key order is the engine's, and strings are escaped as Go escapes them.
    const text = bytes.toString('utf8');
    expect(Object.keys(JSON.parse(text) as object)).toEqual(Object.keys(engine));
    expect(text).toContain('a \\u0026\\u0026 b \\u003cx\\u003e');
    // The input is not changed.
    expect(engine.created).toBe('2026-12-07T16:00:00.123456789Z');
  });

  it('gives the same bytes for the same image built at two times', () => {
    const later = {
      ...engine,
      created: '2026-12-08T01:02:03Z',
      history: engine.history.map((h) => ({
        ...h,
        created: h.created === undefined ? undefined : '2026-12-08T00:00:00Z',
      })),
    };
    const a = reproducibleConfig({ ...engine, history: later.history }, ['sha256:n'], EPOCH).bytes;
    const b = reproducibleConfig(later, ['sha256:n'], EPOCH).bytes;
    expect(a.equals(b)).toBe(true);
  });

  it('writes a whole second as Go does', () => {
    expect(epochTime(0)).toBe('1970-01-01T00:00:00Z');
  });
});

describe('resolveSourceDateEpoch', () => {
  it('takes the flag, else the build arg, else the environment; an empty variable is unset', () => {
    const env = { SOURCE_DATE_EPOCH: '3' };
    expect(resolveSourceDateEpoch({ flag: '1', buildArgs: { SOURCE_DATE_EPOCH: '2' }, env })).toBe(
      1n,
    );
    expect(resolveSourceDateEpoch({ buildArgs: { SOURCE_DATE_EPOCH: '2' }, env })).toBe(2n);
    expect(resolveSourceDateEpoch({ buildArgs: {}, env })).toBe(3n);
    expect(
      resolveSourceDateEpoch({ buildArgs: {}, env: { SOURCE_DATE_EPOCH: '' } }),
    ).toBeUndefined();
    expect(resolveSourceDateEpoch({ buildArgs: {}, env: {} })).toBeUndefined();
  });

  it('refuses what is not a whole number of seconds up to year 9999, in one line naming where it came from', () => {
    for (const bad of ['-1', '1.5', '1e9', ' 1', '253402300800', 'now']) {
      expect(() => resolveSourceDateEpoch({ flag: bad, buildArgs: {}, env: {} })).toThrow(
        `--source-date-epoch "${bad}": not a whole number of seconds`,
      );
    }
    expect(() =>
      resolveSourceDateEpoch({ buildArgs: {}, env: { SOURCE_DATE_EPOCH: 'x' } }),
    ).toThrow('SOURCE_DATE_EPOCH in the environment, "x"');
  });
});
