/**
 * A private key file (OpenSSH, PEM, or PKCS#8 for RSA and ECDSA) held in
 * memory for the build, parsed by ssh2 and signed with there. As buildx,
 * braid asks for no passphrase: an encrypted key is refused up front.
 */
import { createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import ssh2, { type ParsedKey } from 'ssh2';
import ssh2Internals from 'ssh2/lib/protocol/utils.js';
import { SourceProblem, sameKey, type KeySource, type SignHash } from './key-source.js';

/** BuildKit reads at most this much of a key file. */
export const MAX_KEY_FILE_BYTES = 100 * 1024;

class KeyFile implements KeySource {
  readonly description: string;

  constructor(
    path: string,
    private readonly keys: readonly ParsedKey[],
  ) {
    this.description = `key file ${path}`;
  }

  identities(): Promise<ParsedKey[]> {
    return Promise.resolve([...this.keys]);
  }

  sign(publicKey: ParsedKey, data: Buffer, hash: SignHash | undefined): Promise<Buffer> {
    const key = this.keys.find((k) => sameKey(k, publicKey));
    if (!key) return Promise.reject(new Error(`${this.description} does not hold that key`));
    // ssh2's sign returns an Error rather than throwing one; its types do not say so.
    const signed = key.sign(data, key.type === 'ssh-rsa' ? hash : undefined) as Buffer | Error;
    if (signed instanceof Error) return Promise.reject(signed);
    const wire = ssh2Internals.convertSignature(signed, key.type);
    if (!wire) return Promise.reject(new Error(`cannot encode a ${key.type} signature`));
    return Promise.resolve(wire);
  }
}

/** The key(s) in `path`, checked now. */
export function openKeyFile(path: string, id: string): KeySource {
  return new KeyFile(path, readKeys(path, id));
}

function readKeys(path: string, id: string): ParsedKey[] {
  let data: Buffer;
  try {
    const stats = statSync(path);
    if (!stats.isFile()) throw new SourceProblem(`${path} is not a key file`);
    if (stats.size > MAX_KEY_FILE_BYTES) {
      throw new SourceProblem(
        `${path} is not a private key file (over ${MAX_KEY_FILE_BYTES / 1024} KiB)`,
      );
    }
    data = readFileSync(path);
  } catch (err) {
    if (err instanceof SourceProblem) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new SourceProblem(
      code === 'ENOENT' || code === 'ENOTDIR'
        ? `key file ${path} does not exist`
        : `key file ${path} cannot be read (${code ?? 'unreadable'})`,
      { cause: err },
    );
  }
  const parsed = parse(data);
  if (parsed === 'encrypted') {
    throw new SourceProblem(
      `key file ${path} is passphrase-protected, and braid, like buildx, asks for no passphrase: ` +
        `load it into ssh-agent (ssh-add ${path}) and forward the agent (--ssh ${id}=$SSH_AUTH_SOCK)`,
    );
  }
  if (parsed instanceof Error) {
    throw new SourceProblem(`${path} is not a private key file (${parsed.message})`);
  }
  if (parsed.some((key) => !key.isPrivateKey())) {
    throw new SourceProblem(`${path} holds a public key: name the private key file, not the .pub`);
  }
  return parsed;
}

/** ssh2 reads OpenSSH and PEM (PKCS#1, SEC1) keys; PKCS#8 goes through Node's crypto first. */
function parse(data: Buffer): ParsedKey[] | Error | 'encrypted' {
  const parsed = ssh2.utils.parseKey(data);
  if (!(parsed instanceof Error)) return keyList(parsed);
  if (/no passphrase given/.test(parsed.message)) return 'encrypted';
  const text = data.toString('latin1');
  if (text.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) return 'encrypted';
  if (!text.includes('-----BEGIN PRIVATE KEY-----')) return parsed;
  let pem: string;
  try {
    const key = createPrivateKey({ key: data, format: 'pem' });
    // ssh2 reads these two kinds as PKCS#1 and SEC1 PEM.
    const type = key.asymmetricKeyType;
    if (type !== 'rsa' && type !== 'ec') {
      return new Error(
        `a PKCS#8 ${type ?? 'unknown'} key; only RSA and ECDSA keys are read in that format`,
      );
    }
    pem = key.export({ type: type === 'rsa' ? 'pkcs1' : 'sec1', format: 'pem' }).toString();
  } catch (err) {
    return new Error((err as Error).message);
  }
  const converted = ssh2.utils.parseKey(pem);
  return converted instanceof Error ? converted : keyList(converted);
}

/** ssh2 returns an array for an OpenSSH file holding several keys; its types do not say so. */
function keyList(parsed: ParsedKey | ParsedKey[]): ParsedKey[] {
  return Array.isArray(parsed) ? parsed : [parsed];
}
