/**
 * braid.v1.BuildService: what the CLI and CI call.
 */
import { BuildService, type Build, type SubmitBuildRequest } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CallIdentity, ImplOf } from '../rpc/service.js';
import type { AgentRegistry } from './agent-registry.js';
import type { BuildContexts } from './contexts.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { Orchestrator } from './orchestrator.js';
import type { SshRelay } from './ssh-relay.js';
import type { BuildReads } from './stored-builds.js';

export function buildService(deps: {
  /** The orchestrator of the current term; throws (UNAVAILABLE) on a standby. */
  orchestrator: () => Orchestrator;
  /**
   * Takes a submission: the leader's orchestrator, or a standby storing it
   * for the leader (or refusing, naming the leader, when it cannot).
   */
  submit: (request: SubmitBuildRequest, submitter: CallIdentity | undefined) => Promise<Build>;
  /**
   * Who answers reads now: the leader's orchestrator (with a signal aborted
   * when its term ends), or the store on a standby.
   */
  reads: () => { reads: BuildReads; termEnded?: AbortSignal | undefined };
  contexts: BuildContexts;
  agents: AgentRegistry;
  stopping: AbortSignal;
  log: Logger;
  metrics?: Pick<CoordinatorMetrics, 'contextBytes'> | undefined;
  sshRelay: SshRelay;
}): ImplOf<typeof BuildService> {
  return {
    async hasContext(request) {
      const size = await deps.contexts.size(request.digest);
      // The client skips the upload of a context the coordinator holds.
      if (size !== undefined) deps.metrics?.contextBytes('deduplicated', size);
      return { present: size !== undefined, sizeBytes: BigInt(size ?? 0) };
    },
    async uploadContext(requests) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      const header = first.done ? undefined : first.value.payload;
      if (header?.case !== 'header') {
        throw new BraidError('invalid_argument', 'context upload must start with a header');
      }
      const { digest, sizeBytes } = header.value;
      const chunks = (async function* () {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return;
          if (next.value.payload.case !== 'chunk') {
            throw new BraidError('invalid_argument', 'context upload sent a second header');
          }
          yield next.value.payload.value;
        }
      })();
      const alreadyPresent = await deps.contexts.put(digest, Number(sizeBytes), chunks);
      deps.metrics?.contextBytes(alreadyPresent ? 'deduplicated' : 'received', Number(sizeBytes));
      deps.log.info({ digest, sizeBytes: Number(sizeBytes), alreadyPresent }, 'context uploaded');
      return { digest, sizeBytes, alreadyPresent };
    },
    async submitBuild(request, ctx) {
      if (deps.stopping.aborted)
        throw new BraidError('unavailable', 'the coordinator is shutting down');
      return { build: await deps.submit(request, ctx.identity) };
    },
    forwardSsh(requests, ctx) {
      return deps.sshRelay.serveClient(
        requests,
        ctx.identity,
        AbortSignal.any([ctx.signal, deps.stopping]),
      );
    },
    async *watchBuild(request, ctx) {
      const { reads, termEnded } = deps.reads();
      const signal = AbortSignal.any([
        ctx.signal,
        deps.stopping,
        ...(termEnded ? [termEnded] : []),
      ]);
      for await (const event of reads.watch(
        request.buildId,
        request.afterSequence,
        request.follow,
        signal,
      )) {
        yield { event };
      }
      // The leader stepped down mid-stream: the client resumes from its last event elsewhere.
      if (termEnded?.aborted && !ctx.signal.aborted && !deps.stopping.aborted)
        throw new BraidError('unavailable', 'this coordinator stopped leading; resume the watch');
    },
    async getBuild(request) {
      return { build: await deps.reads().reads.getBuild(request.buildId) };
    },
    async listBuilds(request) {
      const limit = request.limit > 0 ? Math.min(request.limit, 1000) : 50;
      return { builds: await deps.reads().reads.listBuilds(limit, request.states) };
    },
    async cancelBuild(request) {
      return { build: await deps.orchestrator().cancel(request.buildId, request.reason) };
    },
    listAgents() {
      // A standby has no agents: it names the leader, which has them.
      deps.orchestrator();
      return { agents: deps.agents.info() };
    },
  };
}
