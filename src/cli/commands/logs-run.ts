import { clientSettings } from '../../config/settings.js';
import { BuildService } from '../../gen/braid/v1/build_pb.js';
import { BraidError, UsageError } from '../../errors.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { EXIT_INTERRUPTED } from '../exit.js';
import {
  BuildFailedError,
  BuildTracker,
  createProgressRenderer,
  failureReport,
  renderBuildEvents,
} from '../progress/index.js';

/**
 * Replays a build's events through the plain or json renderer; with
 * --follow, until the build ends. Exit 0 when the build succeeded or still
 * runs, 1 (BuildFailedError) when it failed, was cancelled or timed out.
 */
export async function runLogs(
  id: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { after, follow, progress, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  if (!/^\d+$/.test(String(after))) {
    throw new UsageError(`--after "${String(after)}": expected a sequence number`);
  }
  const following = Boolean(follow);
  const client = coordinatorClient(BuildService, config);
  const interrupt = new AbortController();
  const onInterrupt = () => interrupt.abort();
  process.once('SIGINT', onInterrupt);
  try {
    const call = { signal: interrupt.signal, timeoutMs: config.timeoutMs };
    const tracker = new BuildTracker(id);
    // Seeded first, so a watch resumed with --after still knows every job's agent.
    const seed = await client.getBuild({ buildId: id }, call);
    if (seed.build) tracker.applyBuild(seed.build);
    const renderer = createProgressRenderer(progress === 'json' ? 'json' : 'plain', {
      out: process.stdout,
      tracker,
    });
    await renderBuildEvents(
      client.watchBuild(
        { buildId: id, afterSequence: BigInt(String(after)), follow: following },
        { signal: interrupt.signal, timeoutMs: following ? undefined : config.timeoutMs },
      ),
      renderer,
    );
    if (interrupt.signal.aborted) {
      process.exitCode = EXIT_INTERRUPTED;
      return;
    }
    if (!tracker.ended) {
      // Without --follow the replay stops at the present; the build's own record says how it stands.
      const latest = await client.getBuild({ buildId: id }, call);
      if (latest.build) tracker.applyBuild(latest.build);
    }
    if (following && !tracker.ended) {
      throw new BraidError(
        'unavailable',
        `the event stream of build ${id} ended before the build did; resume with --after ${tracker.lastSequence}`,
      );
    }
    const report = failureReport(tracker);
    if (report) {
      process.stderr.write(report.details);
      throw new BuildFailedError(report);
    }
  } finally {
    process.removeListener('SIGINT', onInterrupt);
    client.close();
  }
}
