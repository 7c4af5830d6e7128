import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { envName, flagName, loadConfig } from '../../src/config/loader.js';
import { clientSettings, coordinatorSettings } from '../../src/config/settings.js';
import { ConfigError } from '../../src/errors.js';

describe('config compilation', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-config-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function yamlFile(text: string): Promise<string> {
    const file = join(dir, 'braid.yaml');
    await writeFile(file, text);
    return file;
  }

  it('names keys the way users type them', () => {
    expect(envName('shutdownGraceMs')).toBe('BRAID_SHUTDOWN_GRACE_MS');
    expect(flagName('shutdownGraceMs')).toBe('--shutdown-grace-ms');
  });

  it('takes defaults when nothing is given', () => {
    const config = loadConfig(coordinatorSettings({ HOME: '/home/dev' }), { flags: {}, env: {} });
    expect(config.listen).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 7465 });
    expect(config.dataDir).toBe('/home/dev/.local/share/braid');
    expect(config.shutdownGraceMs).toBe(10_000);
    expect(config.logLevel).toBe('info');
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('prefers flags over environment over the YAML file', async () => {
    const file = await yamlFile('timeoutMs: 1000\nlogLevel: debug\ncoordinator: "127.0.0.1:1"\n');
    const config = loadConfig(clientSettings(), {
      flags: { timeoutMs: '3000' },
      env: { BRAID_TIMEOUT_MS: '2000', BRAID_LOG_LEVEL: 'error' },
      file,
    });
    expect(config.timeoutMs).toBe(3000);
    expect(config.logLevel).toBe('error');
    expect(config.coordinator).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 1 });
  });

  it.each([
    [{ flags: { listen: 'nowhere' } }, '--listen'],
    [{ env: { BRAID_LISTEN: 'nowhere' } }, 'BRAID_LISTEN'],
    [{ env: { BRAID_SHUTDOWN_GRACE_MS: '-5' } }, 'BRAID_SHUTDOWN_GRACE_MS'],
    [{ flags: { logLevel: 'loud' } }, '--log-level'],
    [{ env: { BRAID_INSECURE: 'maybe' } }, 'BRAID_INSECURE'],
  ] as [{ flags?: Record<string, string>; env?: Record<string, string> }, string][])(
    'rejects an invalid value with one line naming its key (%o)',
    (given, key) => {
      const run = () =>
        loadConfig(coordinatorSettings({}), { flags: given.flags ?? {}, env: given.env ?? {} });
      expect(run).toThrow(ConfigError);
      expect(run).toThrow(new RegExp(`^invalid config ${key}: `));
      try {
        run();
      } catch (err) {
        expect((err as Error).message).not.toContain('\n');
      }
    },
  );

  it('names the file and key of a bad YAML value, and rejects unknown keys', async () => {
    const bad = await yamlFile('eventsRetained: 5\n');
    expect(() => loadConfig(coordinatorSettings({}), { flags: {}, env: {}, file: bad })).toThrow(
      `invalid config ${bad}: eventsRetained: must be at least 100, got "5"`,
    );
    const unknown = await yamlFile('listne: 127.0.0.1:1\n');
    expect(() =>
      loadConfig(coordinatorSettings({}), { flags: {}, env: {}, file: unknown }),
    ).toThrow(`invalid config ${unknown}: listne: unknown setting`);
  });

  it('says so when the config file is missing or not YAML', async () => {
    expect(() =>
      loadConfig(clientSettings(), { flags: {}, env: {}, file: join(dir, 'absent.yaml') }),
    ).toThrow(/invalid config --config: cannot read .*absent\.yaml \(ENOENT\)/);
    const broken = await yamlFile('a: [1, 2\n');
    expect(() => loadConfig(clientSettings(), { flags: {}, env: {}, file: broken })).toThrow(
      /not valid YAML/,
    );
  });
});
