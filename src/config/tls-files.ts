/**
 * The TLS files a command names — certificate, key, CA — read and checked
 * once at start. A missing or unreadable file, a file without a PEM
 * certificate or key, a key that does not belong to its certificate, an
 * expired certificate, or half a pair is a ConfigError naming the setting
 * as the user gave it.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { flagName, settingSource } from './loader.js';

export interface TlsSettings {
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  readonly tlsCa?: string | undefined;
}

/** What a server presents, and the CA its clients' certificates must chain to (mTLS). */
export interface ServerTlsFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

/** What a client trusts (default: the system's CAs) and presents (for mTLS). */
export interface ClientTlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

type TlsKey = 'tlsCert' | 'tlsKey' | 'tlsCa';

function read(config: TlsSettings, key: TlsKey): Buffer {
  const file = config[key] as string;
  try {
    return readFileSync(file);
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(settingSource(config, key), `cannot read ${file} (${reason})`, {
      cause: err,
    });
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM file (a chain or a CA bundle); none is an error. */
function certificates(config: TlsSettings, key: TlsKey, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('utf8').match(PEM_CERT) ?? [];
  const file = config[key] as string;
  if (blocks.length === 0) {
    throw new ConfigError(settingSource(config, key), `${file} holds no PEM certificate`);
  }
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new ConfigError(
        settingSource(config, key),
        `${file}: not a valid certificate (${(err as Error).message})`,
        { cause: err },
      );
    }
  });
}

function privateKey(config: TlsSettings, pem: Buffer): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new ConfigError(
      settingSource(config, 'tlsKey'),
      `${config.tlsKey}: not a PEM private key (an encrypted key is not supported)`,
      { cause: err },
    );
  }
}

/** The leaf certificate with its key: they must match and the certificate must be valid now. */
function checkPair(config: TlsSettings, now: Date): { cert: Buffer; key: Buffer } {
  const cert = read(config, 'tlsCert');
  const key = read(config, 'tlsKey');
  const leaf = certificates(config, 'tlsCert', cert)[0] as X509Certificate;
  if (!leaf.checkPrivateKey(privateKey(config, key))) {
    throw new ConfigError(
      settingSource(config, 'tlsKey'),
      `${config.tlsKey} is not the key of the certificate in ${config.tlsCert}`,
    );
  }
  checkValidity(config, 'tlsCert', leaf, now);
  return { cert, key };
}

function checkValidity(config: TlsSettings, key: TlsKey, cert: X509Certificate, now: Date): void {
  const file = config[key] as string;
  if (new Date(cert.validTo).getTime() < now.getTime()) {
    throw new ConfigError(
      settingSource(config, key),
      `the certificate in ${file} expired on ${new Date(cert.validTo).toISOString()}`,
    );
  }
  if (new Date(cert.validFrom).getTime() > now.getTime()) {
    throw new ConfigError(
      settingSource(config, key),
      `the certificate in ${file} is not valid before ${new Date(cert.validFrom).toISOString()}`,
    );
  }
}

function requirePair(config: TlsSettings): void {
  if (config.tlsCert && !config.tlsKey) {
    throw new ConfigError(
      settingSource(config, 'tlsCert'),
      `a certificate needs its key: set ${flagName('tlsKey')} too`,
    );
  }
  if (config.tlsKey && !config.tlsCert) {
    throw new ConfigError(
      settingSource(config, 'tlsKey'),
      `a key needs its certificate: set ${flagName('tlsCert')} too`,
    );
  }
}

/** The coordinator's TLS: undefined when no certificate is configured (plaintext). */
export function serverTlsFiles(config: TlsSettings, now = new Date()): ServerTlsFiles | undefined {
  requirePair(config);
  if (!config.tlsCert) {
    if (config.tlsCa) {
      throw new ConfigError(
        settingSource(config, 'tlsCa'),
        `client certificates (mTLS) need TLS: set ${flagName('tlsCert')} and ${flagName('tlsKey')} (the server's certificate) too`,
      );
    }
    return undefined;
  }
  const files: ServerTlsFiles = checkPair(config, now);
  if (config.tlsCa) {
    const ca = read(config, 'tlsCa');
    certificates(config, 'tlsCa', ca);
    files.ca = ca;
  }
  return files;
}

/** A client's TLS: undefined when no TLS file is configured. */
export function clientTlsFiles(config: TlsSettings, now = new Date()): ClientTlsFiles | undefined {
  requirePair(config);
  if (!config.tlsCert && !config.tlsCa) return undefined;
  const files: ClientTlsFiles = config.tlsCert ? checkPair(config, now) : {};
  if (config.tlsCa) {
    const ca = read(config, 'tlsCa');
    certificates(config, 'tlsCa', ca);
    files.ca = ca;
  }
  return files;
}
