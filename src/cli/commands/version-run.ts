import { timestampDate } from '@bufbuild/protobuf/wkt';
import { clientSettings } from '../../config/settings.js';
import { SystemService } from '../../gen/braid/v1/system_pb.js';
import { BRAID_VERSION } from '../../version.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';

export async function runVersion(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { clientOnly, output, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  const result: Record<string, unknown> = { client: { version: BRAID_VERSION } };
  if (!clientOnly) {
    const client = coordinatorClient(SystemService, config);
    try {
      const v = await client.version(
        { clientVersion: BRAID_VERSION },
        { timeoutMs: config.timeoutMs },
      );
      result.coordinator = {
        // With several coordinators: the one that answered.
        address: client.coordinator(),
        version: v.version,
        apiVersions: v.apiVersions,
        hostname: v.hostname,
        platform: v.platform,
        startedAt: v.startedAt ? timestampDate(v.startedAt).toISOString() : undefined,
      };
    } finally {
      client.close();
    }
  }
  if (output === 'json') {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(`client       ${BRAID_VERSION}\n`);
  const c = result.coordinator as Record<string, unknown> | undefined;
  if (c) {
    process.stdout.write(
      `coordinator  ${String(c.version)} at ${String(c.address)} (${String(c.hostname)}, ${String(c.platform)}, api ${(c.apiVersions as string[]).join(',')}, up since ${String(c.startedAt)})\n`,
    );
  }
}
