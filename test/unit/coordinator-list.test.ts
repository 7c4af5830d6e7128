/**
 * `--coordinator a:7465,b:7465`: the list of coordinators a client or an
 * agent is given, as flag, variable and config file, and what one address
 * still means.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { givenKeys, loadConfig } from '../../src/config/loader.js';
import { agentSettings, clientSettings } from '../../src/config/settings.js';
import { ConfigError, UsageError } from '../../src/errors.js';
import { formatGrpcAddress, parseGrpcAddressList } from '../../src/rpc/address.js';

const addresses = (list: readonly { kind: string }[]) =>
  list.map((a) => formatGrpcAddress(a as Parameters<typeof formatGrpcAddress>[0]));

describe('parseGrpcAddressList', () => {
  it('reads the addresses in the order given', () => {
    expect(addresses(parseGrpcAddressList('a.example:7465, b.example:7466,[::1]:7467'))).toEqual([
      'a.example:7465',
      'b.example:7466',
      '[::1]:7467',
    ]);
  });

  it('reads one address as a list of one', () => {
    expect(parseGrpcAddressList('127.0.0.1:7465')).toEqual([
      { kind: 'tcp', host: '127.0.0.1', port: 7465 },
    ]);
  });

  it('names each address once and drops empty entries', () => {
    expect(addresses(parseGrpcAddressList('a:1,,a:1,b:2,'))).toEqual(['a:1', 'b:2']);
  });

  it('refuses a bad entry naming it, in the words a single bad address gets', () => {
    expect(() => parseGrpcAddressList('a:1,nowhere', 'coordinator address')).toThrow(
      new UsageError(
        'coordinator address "nowhere": expected HOST:PORT, [IPv6]:PORT or unix:/path',
      ),
    );
    expect(() => parseGrpcAddressList('', 'coordinator address')).toThrow(
      'coordinator address "": expected HOST:PORT',
    );
  });
});

describe('the coordinator setting', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-coordinators-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps one address working as before: coordinator is it, coordinators holds it alone', () => {
    const config = loadConfig(clientSettings(), {
      flags: { coordinator: '127.0.0.1:1' },
      env: {},
    });
    expect(config.coordinator).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 1 });
    expect(addresses(config.coordinators)).toEqual(['127.0.0.1:1']);
  });

  it('defaults to the local coordinator', () => {
    const config = loadConfig(clientSettings(), { flags: {}, env: {} });
    expect(addresses(config.coordinators)).toEqual(['127.0.0.1:7465']);
    expect(formatGrpcAddress(config.coordinator)).toBe('127.0.0.1:7465');
  });

  it('takes a list from --coordinator: coordinator is the first, coordinators all of them', () => {
    const config = loadConfig(agentSettings({}), {
      flags: { coordinator: 'a.example:7465,b.example:7465' },
      env: {},
    });
    expect(formatGrpcAddress(config.coordinator)).toBe('a.example:7465');
    expect(addresses(config.coordinators)).toEqual(['a.example:7465', 'b.example:7465']);
  });

  it('takes a list from BRAID_COORDINATOR', () => {
    const config = loadConfig(clientSettings(), {
      flags: {},
      env: { BRAID_COORDINATOR: 'a.example:7465,b.example:7465' },
    });
    expect(addresses(config.coordinators)).toEqual(['a.example:7465', 'b.example:7465']);
  });

  it('takes a list from the config file, as a string or a YAML list', async () => {
    const asString = join(dir, 'string.yaml');
    await writeFile(asString, 'coordinator: "a.example:7465,b.example:7465"\n');
    const asList = join(dir, 'list.yaml');
    await writeFile(asList, 'coordinator:\n  - a.example:7465\n  - b.example:7465\n');
    for (const file of [asString, asList]) {
      const config = loadConfig(clientSettings(), { flags: {}, env: {}, file });
      expect(addresses(config.coordinators)).toEqual(['a.example:7465', 'b.example:7465']);
    }
  });

  it('refuses a bad entry in one line naming the key as given', () => {
    const run = () =>
      loadConfig(clientSettings(), { flags: {}, env: { BRAID_COORDINATOR: 'a:1,nowhere' } });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(/^invalid config BRAID_COORDINATOR: coordinator address "nowhere"/);
  });

  it('has no coordinators flag, variable or file key of its own', async () => {
    expect(givenKeys(clientSettings())).toContain('coordinator');
    expect(givenKeys(clientSettings())).not.toContain('coordinators');
    const config = loadConfig(clientSettings(), {
      flags: {},
      env: { BRAID_COORDINATORS: 'elsewhere:1' },
    });
    expect(addresses(config.coordinators)).toEqual(['127.0.0.1:7465']);
    const file = join(dir, 'braid.yaml');
    await writeFile(file, 'coordinators: "a:1"\n');
    expect(() => loadConfig(clientSettings(), { flags: {}, env: {}, file })).toThrow(
      /coordinators: unknown setting/,
    );
  });
});
