import { clientSettings } from '../../config/settings.js';
import { BuildService, BuildState, type Build } from '../../gen/braid/v1/build_pb.js';
import { BraidError } from '../../errors.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { buildStateName, isBuildEnded } from '../progress/names.js';

/** `build b1 cancelled`, or what the build is instead and why. */
export function cancelOutcome(build: Build): string {
  const state = buildStateName(build.state);
  if (build.state === BuildState.CANCELLED) return `build ${build.id} cancelled`;
  if (isBuildEnded(build.state)) return `build ${build.id} already ${state}; nothing to cancel`;
  return `build ${build.id} ${state}; cancel requested`;
}

export async function runCancel(
  id: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { reason, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  const client = coordinatorClient(BuildService, config);
  try {
    const { build } = await client.cancelBuild(
      { buildId: id, reason: typeof reason === 'string' ? reason : '' },
      { timeoutMs: config.timeoutMs },
    );
    if (!build) throw new BraidError('not_found', `build ${id}: the coordinator returned no build`);
    process.stdout.write(`${cancelOutcome(build)}\n`);
  } finally {
    client.close();
  }
}
