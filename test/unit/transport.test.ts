import { Metadata, status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { subjectAltNames } from '../../src/cli/cert-authority.js';
import { loadConfig } from '../../src/config/loader.js';
import { clientSettings, coordinatorSettings } from '../../src/config/settings.js';
import { clientTlsFiles, serverTlsFiles } from '../../src/config/tls-files.js';
import { parseGrpcAddress } from '../../src/rpc/address.js';
import { clientTransport, serverCredentials } from '../../src/rpc/credentials.js';
import { fromServiceError } from '../../src/rpc/status.js';

const PEM = { cert: Buffer.from('cert'), key: Buffer.from('key') };

describe('which transport is used where', () => {
  it('serves plaintext on loopback and unix sockets, elsewhere only TLS or --insecure', () => {
    for (const local of ['127.0.0.1:0', '[::1]:0', 'localhost:0', 'unix:/run/b.sock']) {
      expect(() => serverCredentials(parseGrpcAddress(local), { insecure: false })).not.toThrow();
    }
    const wide = parseGrpcAddress('0.0.0.0:7465');
    expect(() => serverCredentials(wide, { insecure: false })).toThrow(
      'listen address 0.0.0.0:7465 is not loopback: serve TLS (--tls-cert, --tls-key) or allow plaintext with --insecure',
    );
    expect(() => serverCredentials(wide, { insecure: true })).not.toThrow();
    expect(() => serverCredentials(wide, { insecure: false, tls: PEM })).not.toThrow();
  });

  it('dials loopback in plaintext, anything else over TLS unless --insecure, which warns', () => {
    expect(clientTransport(parseGrpcAddress('127.0.0.1:1'), { insecure: false }).secure).toBe(
      false,
    );
    expect(clientTransport(parseGrpcAddress('unix:/x.sock'), { insecure: false }).secure).toBe(
      false,
    );
    const remote = parseGrpcAddress('build.example:7465');
    expect(clientTransport(remote, { insecure: false })).toMatchObject({ secure: true });
    expect(clientTransport(remote, { insecure: false }).warning).toBeUndefined();
    const plain = clientTransport(remote, { insecure: true });
    expect(plain.secure).toBe(false);
    expect(plain.warning).toMatch(/^plaintext gRPC to build\.example:7465 \(--insecure\)/);
    // TLS files mean TLS, on loopback too.
    expect(
      clientTransport(parseGrpcAddress('127.0.0.1:1'), { insecure: false, tls: {} }).secure,
    ).toBe(true);
    expect(clientTransport(remote, { insecure: true, tls: {} })).toMatchObject({ secure: true });
  });
});

describe('TLS settings', () => {
  it('refuses half a pair, naming the setting as it was given', () => {
    const fromEnv = loadConfig(clientSettings(), {
      flags: {},
      env: { BRAID_TLS_CERT: '/etc/braid/client.pem' },
    });
    expect(() => clientTlsFiles(fromEnv)).toThrow(
      'invalid config BRAID_TLS_CERT: a certificate needs its key: set --tls-key too',
    );
    const fromFlag = loadConfig(coordinatorSettings({}), {
      flags: { tlsKey: '/k.pem' },
      env: {},
    });
    expect(() => serverTlsFiles(fromFlag)).toThrow(
      'invalid config --tls-key: a key needs its certificate: set --tls-cert too',
    );
    const caOnly = loadConfig(coordinatorSettings({}), { flags: { tlsCa: '/ca.pem' }, env: {} });
    expect(() => serverTlsFiles(caOnly)).toThrow(
      /^invalid config --tls-ca: client certificates \(mTLS\) need TLS/,
    );
  });

  it('means plaintext when nothing is set, and names a file it cannot read', () => {
    const none = loadConfig(clientSettings(), { flags: {}, env: { BRAID_TLS_CA: '' } });
    expect(clientTlsFiles(none)).toBeUndefined();
    expect(serverTlsFiles(loadConfig(coordinatorSettings({}), { flags: {}, env: {} }))).toBe(
      undefined,
    );
    const missing = loadConfig(clientSettings(), {
      flags: {},
      env: { BRAID_TLS_CA: '/nonexistent/ca.pem' },
    });
    expect(() => clientTlsFiles(missing)).toThrow(
      'invalid config BRAID_TLS_CA: cannot read /nonexistent/ca.pem (ENOENT)',
    );
  });
});

describe('TLS failures as one line', () => {
  function unavailable(details: string, transport: 'plaintext' | 'tls' = 'tls'): string {
    const err = Object.assign(new Error(details), {
      code: status.UNAVAILABLE,
      details,
      metadata: new Metadata(),
    });
    return fromServiceError(err, '/x/Y', '127.0.0.1:9', transport).message;
  }

  it.each([
    [
      'No connection established. Last error: Error: unable to verify the first certificate. Resolution note: ',
      "cannot reach 127.0.0.1:9: the coordinator's certificate is not trusted (unable to verify the first certificate): pass the CA that signed it with --tls-ca",
    ],
    [
      'No connection established. Last error: 80DC09E5017F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n (2026-11-25T15:42:52.389Z). Resolution note: ',
      'cannot reach 127.0.0.1:9: the coordinator requires a client certificate: pass --tls-cert and --tls-key',
    ],
    [
      'No connection established. Last error: Error: 805C33C07A7F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ',
      'cannot reach 127.0.0.1:9: TLS handshake failed: the coordinator does not speak TLS (on loopback, drop the --tls-* flags; elsewhere --insecure allows plaintext)',
    ],
    [
      "No connection established. Last error: Error: Hostname/IP does not match certificate's altnames: IP: 10.0.0.5 is not in the cert's list: 127.0.0.1, ::1. Resolution note: ",
      "cannot reach 127.0.0.1:9: the coordinator's certificate does not name this address (IP: 10.0.0.5 is not in the cert's list: 127.0.0.1, ::1)",
    ],
    [
      'No connection established. Last error: Failed to connect (2026-11-25T15:42:52.328Z). Resolution note: ',
      'cannot reach 127.0.0.1:9: the TLS connection was closed during setup (the coordinator may have refused the client certificate: check --tls-cert and --tls-key)',
    ],
    [
      'No connection established. Last error: Error: read ECONNRESET. Resolution note: ',
      'cannot reach 127.0.0.1:9: the TLS connection was closed during setup (the coordinator may have refused the client certificate: check --tls-cert and --tls-key)',
    ],
  ])('%s', (details, line) => {
    expect(unavailable(details)).toBe(line);
  });

  it('suspects a TLS coordinator when a plaintext connection closes during setup', () => {
    expect(
      unavailable(
        'No connection established. Last error: Failed to connect (2026-11-25T15:42:52.328Z). Resolution note: ',
        'plaintext',
      ),
    ).toBe(
      'cannot reach 127.0.0.1:9: the connection was closed during setup (if the coordinator serves TLS, pass its CA with --tls-ca)',
    );
  });
});

describe('braid certs init host list', () => {
  it('turns names into DNS SANs and addresses into IP SANs', () => {
    expect(subjectAltNames(['localhost', '127.0.0.1', '::1', '*.farm.example'])).toBe(
      'DNS:localhost,IP:127.0.0.1,IP:::1,DNS:*.farm.example',
    );
  });

  it.each([['foo bar'], ['-x'], ['a..b'], ['host,']])('rejects %j, naming it', (host) => {
    expect(() => subjectAltNames([host])).toThrow(`--hosts: "${host}" is neither`);
  });
});
