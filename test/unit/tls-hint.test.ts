import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { givenTlsSettings, nameTlsSettings, withTlsSettingsNamed } from '../../src/cli/tls-hint.js';
import { loadConfig, settingOrigin, settingSource } from '../../src/config/loader.js';
import { clientSettings } from '../../src/config/settings.js';
import { BraidError, RpcError } from '../../src/errors.js';

const NOT_TLS =
  'cannot reach 127.0.0.1:7465: TLS handshake failed: the coordinator does not speak TLS (on loopback, drop the --tls-* flags; elsewhere --insecure allows plaintext)';
const UNTRUSTED =
  "cannot reach 127.0.0.1:7465: the coordinator's certificate is not trusted (self-signed certificate): pass the CA that signed it with --tls-ca";
const CLOSED =
  'cannot reach 127.0.0.1:7465: the TLS connection was closed during setup (the coordinator may have refused the client certificate: check --tls-cert and --tls-key)';

let dir: string;
let configFile: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'braid-tls-hint-'));
  configFile = path.join(dir, 'braid.yaml');
  await writeFile(
    configFile,
    'tlsCert: /etc/braid/client.pem\ntlsKey: /etc/braid/client-key.pem\n',
  );
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The client config as `braid` compiles it from these sources. */
function client(sources: {
  flags?: Record<string, unknown>;
  env?: Record<string, string>;
  file?: string;
}) {
  return loadConfig(clientSettings(), {
    flags: sources.flags ?? {},
    env: sources.env ?? {},
    ...(sources.file !== undefined && { file: sources.file }),
  });
}

describe('where each setting came from', () => {
  it('records a flag, a BRAID_* variable, a config file key and a default', () => {
    const config = client({
      flags: { tlsKey: '/k.pem' },
      env: { BRAID_TLS_CA: '/ca.pem', BRAID_TLS_KEY: '/ignored.pem' },
      file: configFile,
    });
    expect(settingOrigin(config, 'tlsKey')).toEqual({ kind: 'flag', name: '--tls-key' });
    expect(settingOrigin(config, 'tlsCa')).toEqual({ kind: 'env', name: 'BRAID_TLS_CA' });
    expect(settingOrigin(config, 'tlsCert')).toEqual({
      kind: 'file',
      name: `${configFile}: tlsCert`,
      file: configFile,
      key: 'tlsCert',
    });
    expect(settingOrigin(config, 'timeoutMs')?.kind).toBe('default');
    expect(settingOrigin({ ...config }, 'tlsCa')).toBeUndefined();
    // settingSource keeps its words for the config errors that use it.
    expect(settingSource(config, 'tlsCert')).toBe(`${configFile}: tlsCert`);
    expect(settingSource(config, 'timeoutMs')).toBe('--timeout-ms');
  });
});

describe('TLS advice names the setting the user gave', () => {
  it('tells the user to unset BRAID_TLS_CA when that variable turned TLS on', () => {
    const given = givenTlsSettings(client({ env: { BRAID_TLS_CA: '/ca.pem' } }));
    expect(nameTlsSettings(NOT_TLS, given, true)).toBe(
      'cannot reach 127.0.0.1:7465: TLS handshake failed: the coordinator does not speak TLS (on loopback, unset BRAID_TLS_CA; elsewhere --insecure allows plaintext)',
    );
  });

  it('names variables, flags and config file keys together', () => {
    const config = client({
      flags: { tlsCa: '/ca.pem' },
      env: { BRAID_TLS_CERT: '/c.pem' },
      file: configFile,
    });
    expect(nameTlsSettings(NOT_TLS, givenTlsSettings(config), true)).toBe(
      `cannot reach 127.0.0.1:7465: TLS handshake failed: the coordinator does not speak TLS (on loopback, unset BRAID_TLS_CERT, drop --tls-ca, remove tlsKey from ${configFile}; elsewhere --insecure allows plaintext)`,
    );
  });

  it('keeps the flags advice when only flags were given', () => {
    const given = givenTlsSettings(client({ flags: { tlsCa: '/ca.pem' } }));
    expect(nameTlsSettings(NOT_TLS, given, true)).toBe(NOT_TLS);
  });

  it('says TLS is the default off the machine when no TLS setting was given', () => {
    expect(nameTlsSettings(NOT_TLS.replaceAll('127.0.0.1', '10.0.0.5'), [], true)).toBe(
      'cannot reach 10.0.0.5:7465: TLS handshake failed: the coordinator does not speak TLS (braid dials TLS to a coordinator off this machine by default; --insecure allows plaintext)',
    );
  });

  it('names the variable or file key in place of each --tls-* flag the advice mentions', () => {
    const config = client({ env: { BRAID_TLS_CA: '/ca.pem' }, file: configFile });
    const given = givenTlsSettings(config);
    expect(nameTlsSettings(UNTRUSTED, given, true)).toBe(
      "cannot reach 127.0.0.1:7465: the coordinator's certificate is not trusted (self-signed certificate): pass the CA that signed it with BRAID_TLS_CA",
    );
    expect(nameTlsSettings(CLOSED, given, true)).toBe(
      `cannot reach 127.0.0.1:7465: the TLS connection was closed during setup (the coordinator may have refused the client certificate: check tlsCert in ${configFile} and tlsKey in ${configFile})`,
    );
  });

  it('rewrites only unavailable RpcErrors and keeps their operation and target', () => {
    const given = givenTlsSettings(client({ env: { BRAID_TLS_CA: '/ca.pem' } }));
    const err = new RpcError(
      'unavailable',
      '/braid.v1.BuildService/GetBuild',
      '127.0.0.1:7465',
      NOT_TLS,
    );
    const named = withTlsSettingsNamed(err, given, true) as RpcError;
    expect(named).toBeInstanceOf(RpcError);
    expect(named.message).toContain('unset BRAID_TLS_CA');
    expect([named.code, named.operation, named.target]).toEqual([
      'unavailable',
      '/braid.v1.BuildService/GetBuild',
      '127.0.0.1:7465',
    ]);
    const other = new BraidError('invalid_argument', NOT_TLS);
    expect(withTlsSettingsNamed(other, given, true)).toBe(other);
  });
});
