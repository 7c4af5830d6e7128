import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Option } from 'commander';
import { describe, expect, it } from 'vitest';
import {
  extraHostForEngine,
  parseBuildxFlags,
  readSecretFile,
  readSecrets,
  refuseUnsupported,
  SECRET_MAX_BYTES,
  type PathKind,
  type PathProbe,
  type SecretSpec,
} from '../../src/cli/buildx-flags.js';
import { parseAnnotations } from '../../src/cli/buildx/annotations.js';
import { parseCacheFrom, parseCacheTo } from '../../src/cli/buildx/cache.js';
import { csvFields } from '../../src/cli/buildx/csv.js';
import { parseAddHosts, parseNetwork } from '../../src/cli/buildx/run-settings.js';
import { parseSecrets } from '../../src/cli/buildx/secrets.js';
import { parseSshSpecs } from '../../src/cli/buildx/ssh.js';
import { IGNORED_FLAGS, REFUSED_FLAGS, REFUSED_VALUES } from '../../src/cli/buildx/unsupported.js';
import { buildCommand } from '../../src/cli/commands/build.js';
import { BraidError } from '../../src/errors.js';

/** The one line a bad value gets, which must be a usage error (exit 2). */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BraidError);
    expect((err as BraidError).code).toBe('invalid_argument');
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected a BraidError');
}

async function rejectionOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(BraidError);
    expect((err as BraidError).code).toBe('invalid_argument');
    return (err as Error).message;
  }
  throw new Error('expected a BraidError');
}

/** A file system of a few paths: anything else does not exist. */
function probeOf(paths: Record<string, PathKind>): PathProbe {
  return (path) => paths[path] ?? 'missing';
}

const SHA256 = 'sha256:' + 'a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4';

describe('buildx CSV values', () => {
  it.each([
    ['a=1,b=2', ['a=1', 'b=2']],
    ['"src=/a,b",id=x', ['src=/a,b', 'id=x']],
    ['"say ""hi""",x', ['say "hi"', 'x']],
    ['a=1,', ['a=1', '']],
  ])('splits %j as go-csvvalue does', (line, fields) => {
    expect(csvFields(line)).toEqual({ fields });
  });

  it.each([
    ['a="b"', 'a bare " in the unquoted field a="b"'],
    ['"open', 'a quoted field is not closed'],
    ['"a"b', 'a closing quote is not followed by a comma'],
  ])('refuses %j', (line, problem) => {
    expect(csvFields(line)).toEqual({ problem });
  });
});

describe('--secret', () => {
  const env = { NPM_TOKEN: 'from-env', EMPTY: '' };

  it.each<[string, SecretSpec]>([
    ['id=tok,src=/run/tok', { id: 'tok', from: { kind: 'file', path: '/run/tok' } }],
    ['id=tok,source=tok.txt', { id: 'tok', from: { kind: 'file', path: 'tok.txt' } }],
    ['type=file,id=tok,src=f', { id: 'tok', from: { kind: 'file', path: 'f' } }],
    ['id=tok,env=NPM_TOKEN', { id: 'tok', from: { kind: 'env', name: 'NPM_TOKEN' } }],
    // type=env reads the variable from src when env is not given.
    ['type=env,id=tok,src=NPM_TOKEN', { id: 'tok', from: { kind: 'env', name: 'NPM_TOKEN' } }],
    ['type=env,id=API_KEY', { id: 'API_KEY', from: { kind: 'env', name: 'API_KEY' } }],
    ['type=file,id=NPM_TOKEN', { id: 'NPM_TOKEN', from: { kind: 'file', path: 'NPM_TOKEN' } }],
    // Only an id: the variable of that name when it is set (even empty), else the file.
    ['id=NPM_TOKEN', { id: 'NPM_TOKEN', from: { kind: 'env', name: 'NPM_TOKEN' } }],
    ['id=EMPTY', { id: 'EMPTY', from: { kind: 'env', name: 'EMPTY' } }],
    ['id=aws', { id: 'aws', from: { kind: 'file', path: 'aws' } }],
    ['ID=tok,SRC=f', { id: 'tok', from: { kind: 'file', path: 'f' } }],
    ['"id=tok","src=/a,b"', { id: 'tok', from: { kind: 'file', path: '/a,b' } }],
  ])('reads %j as buildx does', (value, spec) => {
    expect(parseSecrets([value], env)).toEqual([spec]);
  });

  it('skips empty values, as buildx does', () => {
    expect(parseSecrets(['', 'id=a,src=f'], env)).toHaveLength(1);
  });

  it.each([
    ['src=/run/tok', '--secret: id is required (id=ID[,src=FILE|env=VAR])'],
    ['id=', '--secret: id is required (id=ID[,src=FILE|env=VAR])'],
    ['id=tok,type=vault', '--secret id=tok: type must be file or env'],
    ['id=tok,path=/x', '--secret id=tok: unknown key "path" (id, type, src, source, env)'],
    ['id=tok,src', '--secret id=tok: a field is not KEY=VALUE'],
    ['type=file,id=tok,env=V', '--secret id=tok: type=file reads src, not env'],
    ['id=tok,src=f,env=V', '--secret id=tok: give src (a file) or env (a variable), not both'],
    ['id=tok,"src', '--secret: not valid CSV: a quoted field is not closed'],
    ['id=a,src=f" ', '--secret: not valid CSV: a bare " in the unquoted field src=f" '],
  ])('refuses %j in one line', (value, line) => {
    expect(errorOf(() => parseSecrets([value], env))).toBe(line);
  });

  it('never prints what looks like a value: a mistyped TOKEN=value names the key only', () => {
    const line = errorOf(() => parseSecrets(['ghp_token=s3cr3t-value'], env));
    expect(line).toBe('--secret: unknown key "ghp_token" (id, type, src, source, env)');
    expect(errorOf(() => parseSecrets(['s3cr3t-value'], env))).not.toContain('s3cr3t');
    expect(errorOf(() => parseSecrets(['id=x,s3cr3t-value'], env))).not.toContain('s3cr3t');
  });

  it('refuses an id given twice', () => {
    expect(errorOf(() => parseSecrets(['id=a,src=f', 'id=a,env=NPM_TOKEN'], env))).toBe(
      '--secret id=a: given twice',
    );
  });
});

describe('reading secrets', () => {
  const files: Record<string, Uint8Array> = {
    '/run/tok': Buffer.from('file-value'),
    '/run/big': Buffer.alloc(SECRET_MAX_BYTES + 1),
    '/run/cap': Buffer.alloc(SECRET_MAX_BYTES),
  };
  const sources = {
    env: { TOKEN: 'env-value', EMPTY: '', HUGE: 'x'.repeat(SECRET_MAX_BYTES + 1) },
    readFile: async (path: string) => {
      const content = files[path];
      if (content) return content;
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    },
  };

  it('reads files and variables, byte for byte, up to the cap', async () => {
    const values = await readSecrets(
      [
        { id: 'a', from: { kind: 'file', path: '/run/tok' } },
        { id: 'b', from: { kind: 'env', name: 'TOKEN' } },
        { id: 'c', from: { kind: 'env', name: 'EMPTY' } },
        { id: 'd', from: { kind: 'file', path: '/run/cap' } },
      ],
      sources,
    );
    expect(values.map(({ id, value }) => [id, Buffer.from(value).toString()])).toEqual([
      ['a', 'file-value'],
      ['b', 'env-value'],
      ['c', ''],
      ['d', '\0'.repeat(SECRET_MAX_BYTES)],
    ]);
  });

  it.each<[SecretSpec[], string]>([
    [
      [{ id: 'tok', from: { kind: 'file', path: '/run/missing' } }],
      '--secret id=tok: cannot read /run/missing (no such file)',
    ],
    [
      [{ id: 'tok', from: { kind: 'env', name: 'UNSET' } }],
      '--secret id=tok: environment variable UNSET is not set',
    ],
    [
      [{ id: 'tok', from: { kind: 'file', path: '/run/big' } }],
      "--secret id=tok: /run/big holds more than 512000 bytes, BuildKit's 500 KiB limit for a secret",
    ],
    [
      [{ id: 'tok', from: { kind: 'env', name: 'HUGE' } }],
      "--secret id=tok: environment variable HUGE holds more than 512000 bytes, BuildKit's 500 KiB limit for a secret",
    ],
    [
      [
        { id: 'tok', from: { kind: 'env', name: 'TOKEN' } },
        { id: 'tok', from: { kind: 'file', path: '/run/tok' } },
      ],
      '--secret id=tok: given twice',
    ],
  ])('refuses %j in one line without the value', async (specs, line) => {
    const message = await rejectionOf(readSecrets(specs, sources));
    expect(message).toBe(line);
    expect(message).not.toContain('env-value');
    expect(message).not.toContain('file-value');
  });

  it('reads a real file, and stops one byte past the cap on a bigger one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'braid-secret-'));
    try {
      await writeFile(join(dir, 'small'), 'hunter2');
      await writeFile(join(dir, 'big'), Buffer.alloc(3 * SECRET_MAX_BYTES, 1));
      expect(Buffer.from(await readSecretFile(join(dir, 'small'))).toString()).toBe('hunter2');
      expect((await readSecretFile(join(dir, 'big'))).byteLength).toBe(SECRET_MAX_BYTES + 1);
      const missing = await rejectionOf(
        readSecrets([{ id: 'x', from: { kind: 'file', path: join(dir, 'nope') } }], {
          env: {},
          readFile: readSecretFile,
        }),
      );
      expect(missing).toBe(`--secret id=x: cannot read ${join(dir, 'nope')} (no such file)`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('--ssh', () => {
  const probe = probeOf({
    '/tmp/agent.sock': 'socket',
    '/tmp/other.sock': 'socket',
    '/home/u/.ssh/id_ed25519': 'file',
    '/home/u/.ssh/id_rsa': 'file',
    '/home/u/.ssh': 'directory',
    '/home/ci/.ssh/id': 'inaccessible',
  });
  const env = { SSH_AUTH_SOCK: '/tmp/agent.sock' };

  it.each([
    ['default', [{ id: 'default', sources: [{ kind: 'socket', path: '/tmp/agent.sock' }] }]],
    ['default=', [{ id: 'default', sources: [{ kind: 'socket', path: '/tmp/agent.sock' }] }]],
    ['gitlab', [{ id: 'gitlab', sources: [{ kind: 'socket', path: '/tmp/agent.sock' }] }]],
    [
      '=/tmp/other.sock',
      [{ id: 'default', sources: [{ kind: 'socket', path: '/tmp/other.sock' }] }],
    ],
    [
      'default=/tmp/other.sock',
      [{ id: 'default', sources: [{ kind: 'socket', path: '/tmp/other.sock' }] }],
    ],
    [
      'github=/home/u/.ssh/id_ed25519,/home/u/.ssh/id_rsa',
      [
        {
          id: 'github',
          sources: [
            { kind: 'key', path: '/home/u/.ssh/id_ed25519' },
            { kind: 'key', path: '/home/u/.ssh/id_rsa' },
          ],
        },
      ],
    ],
  ])('reads %j as buildx does, a socket or a key file by stat', (value, specs) => {
    expect(parseSshSpecs([value], env, probe)).toEqual(specs);
  });

  it.each([
    [
      'default',
      {},
      '--ssh "default": SSH_AUTH_SOCK is not set: start an ssh-agent, or name a socket or key files (--ssh default=$HOME/.ssh/id_ed25519)',
    ],
    [
      'deploy',
      { SSH_AUTH_SOCK: '' },
      '--ssh "deploy": SSH_AUTH_SOCK is not set: start an ssh-agent, or name a socket or key files (--ssh deploy=$HOME/.ssh/id_ed25519)',
    ],
    [
      'default',
      { SSH_AUTH_SOCK: '/tmp/gone.sock' },
      '--ssh "default": /tmp/gone.sock does not exist',
    ],
    ['k=/home/u/.ssh/nope', env, '--ssh "k=/home/u/.ssh/nope": /home/u/.ssh/nope does not exist'],
    [
      'k=/home/u/.ssh',
      env,
      '--ssh "k=/home/u/.ssh": /home/u/.ssh is a directory, not a socket or a key file',
    ],
    [
      'k=/home/ci/.ssh/id',
      env,
      '--ssh "k=/home/ci/.ssh/id": /home/ci/.ssh/id cannot be read (permission denied)',
    ],
    ['k=/home/u/.ssh/id_rsa,', env, '--ssh "k=/home/u/.ssh/id_rsa,": an empty path in the list'],
    [
      'k=/tmp/agent.sock,/tmp/other.sock',
      env,
      '--ssh "k=/tmp/agent.sock,/tmp/other.sock": only one agent socket per id',
    ],
    [
      'k=/tmp/agent.sock,/home/u/.ssh/id_rsa',
      env,
      '--ssh "k=/tmp/agent.sock,/home/u/.ssh/id_rsa": an agent socket and key files cannot be mixed under one id',
    ],
  ])('refuses %j (env %j) in one line', (value, env, line) => {
    expect(errorOf(() => parseSshSpecs([value], env, probe))).toBe(line);
  });

  it('refuses an id given twice, also when one is the default spelled differently', () => {
    expect(errorOf(() => parseSshSpecs(['default', '=/tmp/other.sock'], env, probe))).toBe(
      '--ssh "=/tmp/other.sock": id "default" is given twice',
    );
  });
});

describe('--cache-from and --cache-to', () => {
  const hub = (repository: string, tag: string) => ({
    domain: 'docker.io',
    repository,
    tag,
  });

  it.each([
    ['user/app:cache', [{ type: 'registry', ref: hub('user/app', 'cache') }]],
    [
      'user/app:cache,user/app:main',
      [
        { type: 'registry', ref: hub('user/app', 'cache') },
        { type: 'registry', ref: hub('user/app', 'main') },
      ],
    ],
    [
      'type=registry,ref=registry.example:5000/team/app:buildcache',
      [
        {
          type: 'registry',
          ref: { domain: 'registry.example:5000', repository: 'team/app', tag: 'buildcache' },
        },
      ],
    ],
    [
      `TYPE=registry,REF=ghcr.io/o/app@${SHA256}`,
      [{ type: 'registry', ref: { domain: 'ghcr.io', repository: 'o/app', digest: SHA256 } }],
    ],
  ])('--cache-from %j', (value, imports) => {
    expect(parseCacheFrom([value])).toEqual(imports);
  });

  it.each([
    ['type=inline', [{ type: 'inline' }]],
    [
      'type=registry,ref=user/app:cache',
      [{ type: 'registry', ref: hub('user/app', 'cache'), mode: 'min', ignoreError: false }],
    ],
    [
      'type=registry,ref=user/app:cache,mode=min,ignore-error=true',
      [{ type: 'registry', ref: hub('user/app', 'cache'), mode: 'min', ignoreError: true }],
    ],
    [
      'user/app:cache',
      [{ type: 'registry', ref: hub('user/app', 'cache'), mode: 'min', ignoreError: false }],
    ],
  ])('--cache-to %j', (value, exports) => {
    expect(parseCacheTo([value])).toEqual(exports);
  });

  it('skips empty values, as buildx does', () => {
    expect(parseCacheFrom([''])).toEqual([]);
    expect(parseCacheTo([''])).toEqual([]);
  });

  it.each([
    [
      'user/app',
      '--cache-from "user/app": a cache ref without a tag: give REF:TAG (or REF@DIGEST)',
    ],
    [
      'type=registry,ref=user/app',
      '--cache-from "type=registry,ref=user/app": a cache ref without a tag: give REF:TAG (or REF@DIGEST)',
    ],
    [
      'User/App:1',
      '--cache-from "User/App:1": invalid image reference "User/App:1": repository name must be lowercase',
    ],
    ['type=registry', '--cache-from "type=registry": ref is required (type=registry,ref=REF:TAG)'],
    [
      'ref=user/app:c',
      '--cache-from "ref=user/app:c": type is required (type=registry,ref=REF:TAG)',
    ],
    ['type=registry,ref', '--cache-from "type=registry,ref": "ref" is not KEY=VALUE'],
    [
      'type=registry,ref=user/app:c,mode=max',
      '--cache-from "type=registry,ref=user/app:c,mode=max": braid does not support the attribute "mode": braid reads the cache images under ref and takes no other attribute',
    ],
    [
      'type=inline',
      '--cache-from "type=inline": type=inline is a --cache-to type; read an inline cache with --cache-from type=registry,ref=IMAGE:TAG',
    ],
    [
      'type=local,src=cache',
      '--cache-from "type=local,src=cache": type=local is not supported: the cache directory would be read and written on the agents\' hosts, not on yours',
    ],
    [
      'type=gha',
      '--cache-from "type=gha": type=gha is not supported: it needs the GitHub Actions cache service\'s token, which braid\'s agents do not have',
    ],
    [
      'type=s3,region=eu-west-1,bucket=b',
      '--cache-from "type=s3,region=eu-west-1,bucket=b": type=s3 is not supported: it needs S3 credentials, which braid\'s agents do not have',
    ],
    [
      'type=azblob,name=c',
      '--cache-from "type=azblob,name=c": type=azblob is not supported: it needs Azure Blob Storage credentials, which braid\'s agents do not have',
    ],
    [
      'type=redis',
      '--cache-from "type=redis": unknown cache type "redis" (buildx knows registry, inline, local, gha, s3, azblob)',
    ],
  ])('refuses --cache-from %j in one line', (value, line) => {
    expect(errorOf(() => parseCacheFrom([value]))).toBe(line);
  });

  it.each([
    [
      'type=registry,ref=user/app:cache,mode=max',
      '--cache-to "type=registry,ref=user/app:cache,mode=max": mode=max is not supported: braid\'s agents build through the Docker Engine API, whose /build exports cache only inline (mode=min); mode=max needs BuildKit\'s registry cache exporter, which that API does not offer',
    ],
    [
      'type=registry,ref=user/app:cache,mode=all',
      '--cache-to "type=registry,ref=user/app:cache,mode=all": mode must be min or max, not "all"',
    ],
    [
      'type=registry,ref=user/app:cache,ignore-error=maybe',
      '--cache-to "type=registry,ref=user/app:cache,ignore-error=maybe": ignore-error must be true or false',
    ],
    [
      'type=registry,ref=user/app',
      '--cache-to "type=registry,ref=user/app": a cache ref without a tag: give REF:TAG',
    ],
    [
      `type=registry,ref=user/app@${SHA256}`,
      `--cache-to "type=registry,ref=user/app@${SHA256}": a cache ref is pushed to: give a tag, not a digest`,
    ],
    [
      'type=registry,ref=user/app:c,compression=zstd',
      '--cache-to "type=registry,ref=user/app:c,compression=zstd": braid does not support the attribute "compression": braid stores the cache as one inline-cache image per platform under ref and takes only mode=min and ignore-error',
    ],
    [
      'type=inline,mode=max',
      '--cache-to "type=inline,mode=max": braid does not support the attribute "mode" with type=inline',
    ],
    [
      'type=local,dest=out',
      '--cache-to "type=local,dest=out": type=local is not supported: the cache directory would be read and written on the agents\' hosts, not on yours',
    ],
  ])('refuses --cache-to %j in one line', (value, line) => {
    expect(errorOf(() => parseCacheTo([value]))).toBe(line);
  });
});

describe('--annotation', () => {
  it.each([
    ['foo=bar', [{ types: ['manifest'], key: 'foo', value: 'bar' }]],
    ['foo=', [{ types: ['manifest'], key: 'foo', value: '' }]],
    ['foo=a=b', [{ types: ['manifest'], key: 'foo', value: 'a=b' }]],
    [
      'org.opencontainers.image.source=https://git.example/a.git',
      [
        {
          types: ['manifest'],
          key: 'org.opencontainers.image.source',
          value: 'https://git.example/a.git',
        },
      ],
    ],
    ['index:foo=bar', [{ types: ['index'], key: 'foo', value: 'bar' }]],
    [
      'index,manifest,manifest-descriptor:foo=bar',
      [{ types: ['index', 'manifest', 'manifest-descriptor'], key: 'foo', value: 'bar' }],
    ],
    [
      'manifest[linux/amd64]:foo=bar',
      [
        {
          types: ['manifest'],
          platform: { os: 'linux', architecture: 'amd64' },
          key: 'foo',
          value: 'bar',
        },
      ],
    ],
    [
      'manifest[linux/arm64],manifest-descriptor[linux/arm64],index:k=v',
      [
        {
          types: ['manifest', 'manifest-descriptor'],
          platform: { os: 'linux', architecture: 'arm64' },
          key: 'k',
          value: 'v',
        },
        { types: ['index'], key: 'k', value: 'v' },
      ],
    ],
  ])('reads %j as buildx does (default: every platform manifest)', (value, annotations) => {
    expect(parseAnnotations([value])).toEqual(annotations);
  });

  it.each([
    ['foo', '--annotation "foo": expected [TYPE[,TYPE...]:]KEY=VALUE'],
    ['=bar', '--annotation "=bar": the key is empty'],
    ['index:=bar', '--annotation "index:=bar": the key is empty'],
    ['a b=c', '--annotation "a b=c": the key "a b" contains white space'],
    [
      'config:foo=bar',
      '--annotation "config:foo=bar": unknown annotation type "config" (manifest, index, manifest-descriptor)',
    ],
    [
      'Manifest:foo=bar',
      '--annotation "Manifest:foo=bar": invalid annotation type "Manifest" (expected TYPE or TYPE[OS/ARCH] before ":")',
    ],
    [
      'manifest[linux/*]:foo=bar',
      '--annotation "manifest[linux/*]:foo=bar": invalid annotation type "manifest[linux/*]" (expected TYPE or TYPE[OS/ARCH] before ":")',
    ],
    [
      'manifest[linux/sparc]:foo=bar',
      '--annotation "manifest[linux/sparc]:foo=bar": invalid platform "linux/sparc": unknown architecture "sparc"',
    ],
    [
      'index[linux/amd64]:foo=bar',
      '--annotation "index[linux/amd64]:foo=bar": a platform applies to manifest and manifest-descriptor, not to index',
    ],
    [
      'index-descriptor:foo=bar',
      '--annotation "index-descriptor:foo=bar": type index-descriptor is not supported: it annotates the index\'s descriptor in an OCI layout, and braid pushes to a registry',
    ],
  ])('refuses %j in one line', (value, line) => {
    expect(errorOf(() => parseAnnotations([value]))).toBe(line);
  });
});

describe('--network, --add-host', () => {
  it.each(['default', 'none', 'host'])('--network %s', (mode) => {
    expect(parseNetwork(mode)).toBe(mode);
  });

  it.each(['bridge', 'mynet', 'container:abc', ''])('refuses --network %j', (mode) => {
    expect(errorOf(() => parseNetwork(mode))).toBe(
      `--network "${mode}": not supported: BuildKit runs RUN steps with default, none or host networking, and your other networks do not exist on the agents' hosts`,
    );
  });

  it.each([
    ['my-host:10.0.0.1', 'my-host', { kind: 'ip', ip: '10.0.0.1', family: 4 }],
    ['my_host=8.8.8.8', 'my_host', { kind: 'ip', ip: '8.8.8.8', family: 4 }],
    ['v6=2001:4860:4860::8888', 'v6', { kind: 'ip', ip: '2001:4860:4860::8888', family: 6 }],
    ['v6:2001:db8::1', 'v6', { kind: 'ip', ip: '2001:db8::1', family: 6 }],
    ['v6=[2001:db8::1]', 'v6', { kind: 'ip', ip: '2001:db8::1', family: 6 }],
    ['v4=[10.0.0.1]', 'v4', { kind: 'ip', ip: '10.0.0.1', family: 4 }],
    ['mapped=::ffff:10.0.0.1', 'mapped', { kind: 'ip', ip: '::ffff:10.0.0.1', family: 6 }],
    ['host.docker.internal=host-gateway', 'host.docker.internal', { kind: 'host-gateway' }],
    ['gw:host-gateway', 'gw', { kind: 'host-gateway' }],
  ])('--add-host %j', (value, host, address) => {
    expect(parseAddHosts([value])).toEqual([{ host, address }]);
  });

  it('splits a comma-separated --add-host as buildx (a string slice) does', () => {
    const hosts = parseAddHosts(['a:10.0.0.1,b=10.0.0.2', 'c:host-gateway']);
    expect(hosts.map(extraHostForEngine)).toEqual(['a:10.0.0.1', 'b:10.0.0.2', 'c:host-gateway']);
  });

  it.each([
    ['nohost', '--add-host "nohost": expected HOST:IP or HOST=IP'],
    [':10.0.0.1', '--add-host ":10.0.0.1": "" is not a host name (letters, digits, ".", "-", "_")'],
    [
      'a b=1.1.1.1',
      '--add-host "a b=1.1.1.1": "a b" is not a host name (letters, digits, ".", "-", "_")',
    ],
    ['h=', '--add-host "h=": "" is not an IPv4 or IPv6 address, nor host-gateway'],
    [
      'h=10.0.0',
      '--add-host "h=10.0.0": "10.0.0" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=256.0.0.1',
      '--add-host "h=256.0.0.1": "256.0.0.1" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=010.0.0.1',
      '--add-host "h=010.0.0.1": "010.0.0.1" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=fe80::1%eth0',
      '--add-host "h=fe80::1%eth0": "fe80::1%eth0" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=2001:db8:::1',
      '--add-host "h=2001:db8:::1": "2001:db8:::1" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=example.com',
      '--add-host "h=example.com": "example.com" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
    [
      'h=host-gateway2',
      '--add-host "h=host-gateway2": "host-gateway2" is not an IPv4 or IPv6 address, nor host-gateway',
    ],
  ])('refuses --add-host %j in one line', (value, line) => {
    expect(errorOf(() => parseAddHosts([value]))).toBe(line);
  });
});

describe('flags braid does not support', () => {
  it.each(REFUSED_FLAGS.map((f) => [f.long, f] as const))(
    '%s is refused with its reason, whatever its value',
    (long, flag) => {
      const value = flag.example[1] ?? true;
      expect(errorOf(() => refuseUnsupported({ [flag.key]: value }))).toBe(
        `braid build does not support ${long}: ${flag.why}`,
      );
    },
  );

  it("leaves commander's default of a negatable flag alone: --no-cache-filter only with a value", () => {
    expect(() => refuseUnsupported({ cacheFilter: true, cache: false })).not.toThrow();
    expect(errorOf(() => refuseUnsupported({ cacheFilter: 'build' }))).toMatch(
      /^braid build does not support --no-cache-filter: /,
    );
  });

  it.each([
    [{ call: ['build'] }],
    [{ sbom: ['False'] }],
    [{ sbom: ['true', '0'] }],
    [{ sbom: [''] }],
    [{ allow: ['network.host'] }],
    [{ ssh: ['default'], detach: undefined }],
    [{ detach: true, secret: ['id=a'] }],
    [{ rm: true, forceRm: true, compress: true }],
  ])('accepts %j, which asks for nothing braid would not do', (flags) => {
    expect(() => refuseUnsupported(flags)).not.toThrow();
  });

  const why = (long: string) => REFUSED_VALUES.find((f) => f.long === long)?.why;
  it.each([
    [{ call: ['check'] }, `braid build does not support --call check: ${why('--call')}`],
    [{ call: ['outline'] }, `braid build does not support --call outline: ${why('--call')}`],
    [{ sbom: ['true'] }, `braid build does not support --sbom: ${why('--sbom')}`],
    [{ sbom: ['generator=x'] }, `braid build does not support --sbom: ${why('--sbom')}`],
    [{ sbom: ['false', '1'] }, `braid build does not support --sbom: ${why('--sbom')}`],
    [
      { allow: ['network.host', 'security.insecure'] },
      `braid build does not support --allow security.insecure: ${why('--allow')}`,
    ],
    [
      { ssh: ['default'], detach: true },
      'braid build does not support --ssh with --detach: the agents reach your ssh-agent or keys through braid build while it runs: leave out --detach',
    ],
  ])('refuses %j in one line', (flags, line) => {
    expect(errorOf(() => refuseUnsupported(flags))).toBe(line);
  });
});

describe('braid build registers every buildx flag', () => {
  const command = buildCommand({});
  const options = new Map(command.options.map((o: Option) => [o.long, o]));

  it("has each refused and ignored flag, hidden from --help, with buildx's short flag", () => {
    for (const flag of [...REFUSED_FLAGS, ...REFUSED_VALUES, ...IGNORED_FLAGS]) {
      const option = options.get(flag.long);
      expect(option, flag.long).toBeDefined();
      if (flag.long !== '--allow') expect(option?.hidden, flag.long).toBe(true);
      const short = /^(-[A-Za-z]),/.exec(flag.spec)?.[1];
      expect(option?.short, flag.long).toBe(short);
      expect(option?.attributeName(), flag.long).toBe(flag.key);
    }
  });

  it('shows the flags it honours', () => {
    for (const long of [
      '--push',
      '--keep-going',
      '--secret',
      '--ssh',
      '--cache-from',
      '--cache-to',
      '--annotation',
      '--network',
      '--add-host',
      '--allow',
      '--provenance',
      '--attest',
    ]) {
      expect(options.get(long)?.hidden, long).toBe(false);
    }
  });

  it('collects every --provenance and --attest given, as the parser reads them', () => {
    const build = buildCommand({});
    build.parseOptions([
      '--provenance',
      'true',
      '--provenance=false',
      '--attest',
      'type=sbom,disabled=true',
    ]);
    expect(build.opts()).toMatchObject({
      provenance: ['true', 'false'],
      attest: ['type=sbom,disabled=true'],
    });
  });
});

describe('parseBuildxFlags', () => {
  const probe = probeOf({ '/tmp/agent.sock': 'socket', '../shared': 'directory' });
  const env = { SSH_AUTH_SOCK: '/tmp/agent.sock', NPM_TOKEN: 'x' };

  it('gives nothing when no buildx flag is given', () => {
    expect(parseBuildxFlags({ tag: ['r/a:1'], progress: 'auto' }, env, probe)).toEqual({
      secrets: [],
      ssh: [],
      cacheFrom: [],
      cacheTo: [],
      annotations: [],
      extraHosts: [],
      keepGoing: false,
      provenance: 'min',
    });
  });

  it("parses commander's options of a buildx command line into one typed object", () => {
    const flags = parseBuildxFlags(
      {
        secret: ['id=npm,env=NPM_TOKEN'],
        ssh: ['default'],
        cacheFrom: ['user/app:cache'],
        cacheTo: ['type=inline'],
        annotation: ['index:org.opencontainers.image.title=app'],
        network: 'host',
        addHost: ['db:10.0.0.5'],
        push: true,
        keepGoing: true,
        allow: ['network.host'],
        provenance: ['false'],
      },
      env,
      probe,
    );
    expect(flags).toEqual({
      secrets: [{ id: 'npm', from: { kind: 'env', name: 'NPM_TOKEN' } }],
      ssh: [{ id: 'default', sources: [{ kind: 'socket', path: '/tmp/agent.sock' }] }],
      cacheFrom: [
        { type: 'registry', ref: { domain: 'docker.io', repository: 'user/app', tag: 'cache' } },
      ],
      cacheTo: [{ type: 'inline' }],
      annotations: [{ types: ['index'], key: 'org.opencontainers.image.title', value: 'app' }],
      network: 'host',
      extraHosts: [{ host: 'db', address: { kind: 'ip', ip: '10.0.0.5', family: 4 } }],
      keepGoing: true,
      provenance: 'disabled',
    });
  });

  it('refuses what braid does not support before parsing anything else', () => {
    expect(errorOf(() => parseBuildxFlags({ load: true, secret: ['bad'] }, env, probe))).toMatch(
      /^braid build does not support --load: /,
    );
  });

  it('names the first bad value', () => {
    expect(errorOf(() => parseBuildxFlags({ network: 'bridge' }, env, probe))).toMatch(
      /^--network "bridge": not supported: /,
    );
  });

  it('reads --provenance, --attest and BUILDX_NO_DEFAULT_ATTESTATIONS from the environment it is given', () => {
    expect(parseBuildxFlags({ provenance: ['mode=max'] }, env, probe).provenance).toBe('max');
    expect(parseBuildxFlags({ attest: ['type=provenance,mode=min'] }, env, probe).provenance).toBe(
      'min',
    );
    const off = { ...env, BUILDX_NO_DEFAULT_ATTESTATIONS: '1' };
    expect(parseBuildxFlags({}, off, probe).provenance).toBe('disabled');
    expect(errorOf(() => parseBuildxFlags({ attest: ['type=sbom'] }, env, probe))).toMatch(
      /^--attest "type=sbom": type=sbom is not supported: /,
    );
  });
});
