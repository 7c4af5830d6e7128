import { createHash } from 'node:crypto';
import { credentials } from '@grpc/grpc-js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildService } from '../../src/gen/braid/v1/build_pb.js';
import { RpcError } from '../../src/errors.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';

type Entry = {
  name: string;
  type?: 'file' | 'symlink' | 'link' | 'directory' | 'character-device' | 'fifo';
  body?: string;
  linkname?: string;
};

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: e.name,
        type: e.type ?? 'file',
        linkname: e.linkname,
        mode: 0o644,
        mtime: new Date(0),
      };
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if ((e.type ?? 'file') === 'file') tar.entry(header, Buffer.from(e.body ?? ''), cb);
      else tar.entry(header, cb);
    });
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

describe('the coordinator facing hostile input', () => {
  let coordinator: TestCoordinator;
  let client: ServiceClient<(typeof BuildService)['method']>;

  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--max-context-bytes',
      '65536',
      '--max-message-bytes',
      '262144',
    ]);
    client = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
  });
  afterAll(async () => {
    client?.close();
    await coordinator?.stop();
  });

  async function upload(bytes: Buffer, announced = digestOf(bytes)): Promise<unknown> {
    const chunks = [
      {
        payload: {
          case: 'header' as const,
          value: { digest: announced, sizeBytes: BigInt(bytes.length) },
        },
      },
      { payload: { case: 'chunk' as const, value: bytes } },
    ];
    return client.uploadContext(chunks).catch((e: unknown) => e);
  }

  it.each([
    [
      'a ../ path',
      [
        { name: 'Dockerfile', body: 'FROM scratch' },
        { name: '../evil', body: 'x' },
      ],
      /"\.\.\/evil" climbs out of the context/,
    ],
    [
      'an absolute path',
      [{ name: '/etc/passwd', body: 'x' }],
      /"\/etc\/passwd" is an absolute path/,
    ],
    [
      'a symlink pointing outside',
      [{ name: 'escape', type: 'symlink' as const, linkname: '../../etc/shadow' }],
      /"escape" is a symlink to "\.\.\/\.\.\/etc\/shadow", outside the context/,
    ],
    [
      'an absolute symlink',
      [{ name: 'root', type: 'symlink' as const, linkname: '/' }],
      /"root" is a symlink to "\/", outside the context/,
    ],
    [
      'a device node',
      [{ name: 'null', type: 'character-device' as const }],
      /"null" is a character-device/,
    ],
  ] as [string, Entry[], RegExp][])(
    'refuses a context tar with %s and stores nothing',
    async (_name, entries, message) => {
      const bytes = await tarOf(entries);
      const err = (await upload(bytes)) as RpcError;
      expect(err).toBeInstanceOf(RpcError);
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toMatch(message);
      expect((await client.hasContext({ digest: digestOf(bytes) })).present).toBe(false);
    },
  );

  it('refuses bytes that do not hash to the announced digest', async () => {
    const bytes = await tarOf([{ name: 'Dockerfile', body: 'FROM scratch' }]);
    const err = (await upload(bytes, digestOf(Buffer.from('other')))) as RpcError;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toMatch(/hashes to sha256:[0-9a-f]{64}, not the announced/);
  });

  it('refuses a context over the size limit before reading it', async () => {
    const bytes = await tarOf([
      { name: 'Dockerfile', body: 'FROM scratch' },
      { name: 'big', body: 'x'.repeat(70_000) },
    ]);
    const err = (await upload(bytes)) as RpcError;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toMatch(/exceeds the coordinator's limit of 65536 bytes/);
  });

  it('refuses a gRPC message over the size limit with resource_exhausted', async () => {
    const chunks = [
      {
        payload: {
          case: 'header' as const,
          value: { digest: `sha256:${'1'.repeat(64)}`, sizeBytes: 1000n },
        },
      },
      { payload: { case: 'chunk' as const, value: Buffer.alloc(300_000) } },
    ];
    const err = (await client.uploadContext(chunks).catch((e: unknown) => e)) as RpcError;
    expect(err.code).toBe('resource_exhausted');
  });

  describe('SubmitBuild', () => {
    let digest: string;
    beforeAll(async () => {
      const bytes = await tarOf([
        { name: 'Dockerfile', body: 'FROM scratch' },
        { name: 'sub/Dockerfile.alt', body: 'FROM scratch' },
      ]);
      digest = digestOf(bytes);
      const result = (await upload(bytes)) as { digest: string };
      expect(result.digest).toBe(digest);
    });

    const platform = { os: 'linux', architecture: 'amd64' };
    const spec = (patch: Record<string, unknown>) => ({
      spec: {
        contextDigest: digest,
        platforms: [platform],
        tags: ['127.0.0.1:5000/a/b:1'],
        ...patch,
      },
    });

    it.each([
      [
        'a Dockerfile path outside the context',
        { dockerfile: '../Dockerfile' },
        /Dockerfile path "\.\.\/Dockerfile" must stay inside the context/,
      ],
      [
        'a Dockerfile that is not in the context',
        { dockerfile: 'nope/Dockerfile' },
        /Dockerfile "nope\/Dockerfile" is not in context/,
      ],
      [
        'an unknown platform',
        { platforms: [{ os: 'linux', architecture: 'sparc9' }] },
        /invalid platform "linux\/sparc9": unknown architecture "sparc9"/,
      ],
      [
        'a tag with a bad host',
        { tags: ['bad_host:99999/a:1'] },
        /invalid image reference "bad_host:99999\/a:1"/,
      ],
      [
        'a malformed tag',
        { tags: ['127.0.0.1:5000/a/b:-bad'] },
        /invalid image reference "127\.0\.0\.1:5000\/a\/b:-bad"/,
      ],
      [
        'a build-arg name that is not an identifier',
        { buildArgs: { 'A-B': '1' } },
        /build arg name "A-B" is not an identifier/,
      ],
      [
        'too many platforms',
        { platforms: Array.from({ length: 40 }, () => platform) },
        /40 platforms requested; at most 32/,
      ],
      [
        'too many tags',
        { tags: Array.from({ length: 100 }, (_, i) => `127.0.0.1:5000/a/b:t${i}`) },
        /100 tags given; at most 64/,
      ],
      [
        'a context that was never uploaded',
        { contextDigest: `sha256:${'0'.repeat(64)}` },
        /has not been uploaded/,
      ],
    ] as [string, Record<string, unknown>, RegExp][])(
      'refuses %s and stores no build',
      async (_name, patch, message) => {
        const err = (await client
          .submitBuild(spec(patch) as never)
          .catch((e: unknown) => e)) as RpcError;
        expect(err).toBeInstanceOf(RpcError);
        expect(['invalid_argument', 'failed_precondition']).toContain(err.code);
        expect(err.message).toMatch(message);
        expect((await client.listBuilds({})).builds).toEqual([]);
      },
    );
  });
});
