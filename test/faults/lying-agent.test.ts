/**
 * An agent that claims a platform it cannot build: its "arm64" image holds
 * x86-64 binaries. The arch guard refuses it at the stitch and no tag moves.
 * A real coordinator and registry; the agent is faked at the protocol level
 * because lying is what is under test.
 */
import { createHash } from 'node:crypto';
import { credentials } from '@grpc/grpc-js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentService } from '../../src/gen/braid/v1/agent_pb.js';
import { BuildService, BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { createClient } from '../../src/rpc/client.js';
import { pushBaseImage } from '../support/base-image.js';
import { startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireCommand } from '../support/components.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

async function contextTar(): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  tar.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, 'FROM scratch\n');
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

describe('an agent claiming a platform it cannot build', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let skopeo: string;

  beforeAll(async () => {
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    coordinator = await startTestCoordinator();
  });
  afterAll(async () => {
    await coordinator?.stop();
    await registry?.stop();
  });

  it('has its result refused by the arch guard, and no tag moves', async () => {
    const agentClient = createClient(AgentService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
    const buildClient = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
    const session = agentClient.connect();
    try {
      await session.send({
        body: {
          case: 'hello',
          value: {
            name: 'liar',
            version: 'test',
            nativePlatform: { os: 'linux', architecture: 'arm64' },
            capacity: 1,
          },
        },
      });
      const bytes = await contextTar();
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      await buildClient.uploadContext([
        { payload: { case: 'header', value: { digest, sizeBytes: BigInt(bytes.length) } } },
        { payload: { case: 'chunk', value: bytes } },
      ]);
      const tag = `${registry.host}/team/lie:1`;
      const submitted = await buildClient.submitBuild({
        spec: {
          contextDigest: digest,
          platforms: [{ os: 'linux', architecture: 'arm64' }],
          tags: [tag],
        },
      });
      const buildId = submitted.build?.id ?? '';
      // The fake agent answers on its session in the background; leaving the
      // loop early would cancel the call before the coordinator read the result.
      const answering = (async () => {
        for await (const message of session) {
          if (message.body.case !== 'assign') continue;
          const job = message.body.value;
          // "Build": push an image whose config says arm64 but whose busybox is x86-64.
          const [domain, ...rest] = job.pushRepository.split('/');
          await pushBaseImage(domain ?? '', rest.join('/'), 'lie-src', {
            platforms: [
              {
                os: 'linux',
                architecture: 'arm64',
                variant: 'v8',
                debianArch: 'amd64',
                unameMachine: 'x86_64',
              },
            ],
          });
          const index = JSON.parse(
            (
              await run(skopeo, [
                'inspect',
                '--raw',
                '--tls-verify=false',
                `docker://${job.pushRepository}:lie-src`,
              ])
            ).stdout,
          ) as {
            manifests: { digest: string; size: number; mediaType: string }[];
          };
          const child = index.manifests[0];
          await session.send({
            body: { case: 'update', value: { jobId: job.jobId, state: 3, step: 'building' } },
          });
          await session.send({
            body: {
              case: 'result',
              value: {
                jobId: job.jobId,
                image: {
                  digest: child?.digest,
                  sizeBytes: BigInt(child?.size ?? 0),
                  mediaType: child?.mediaType,
                  platform: { os: 'linux', architecture: 'arm64' },
                },
              },
            },
          });
        }
      })().catch(() => undefined);
      let build = (await buildClient.getBuild({ buildId })).build;
      const deadline = Date.now() + 30_000;
      while (
        build &&
        build.state !== BuildState.FAILED &&
        build.state !== BuildState.SUCCEEDED &&
        Date.now() < deadline
      ) {
        await new Promise((r) => setTimeout(r, 200));
        build = (await buildClient.getBuild({ buildId })).build;
      }
      const state = await tagState(skopeo, tag, ['linux/arm64']);
      await recordFault({
        fault: 'agent lying about its platform',
        attempted: 1,
        succeeded: 0,
        failedCleanly: build?.state === BuildState.FAILED && state === 'absent' ? 1 : 0,
        incompleteTagMoves: state === 'incomplete' ? 1 : 0,
        rebuiltAfterRestart: 0,
      });
      expect(build?.state).toBe(BuildState.FAILED);
      expect(build?.error).toBe(
        'stitch: linux/arm64: /bin/busybox is x86-64 ELF; no tag was moved',
      );
      expect(state).toBe('absent');
      session.cancel();
      await answering;
    } finally {
      session.cancel();
      agentClient.close();
      buildClient.close();
    }
  });
});
