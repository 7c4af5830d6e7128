/**
 * braid.v1.AgentService: the agents' Connect sessions and context fetches.
 */
import { AgentService, type ConnectResponseSchema } from '../gen/braid/v1/agent_pb.js';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { AGENT_NAME } from '../agent-name.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { AsyncQueue } from '../rpc/async-queue.js';
import type { CallIdentity, ImplOf } from '../rpc/service.js';
import { BRAID_VERSION } from '../version.js';
import type { AgentRegistry, AgentSession } from './agent-registry.js';
import type { BuildContexts } from './contexts.js';
import type { Orchestrator } from './orchestrator.js';
import type { SshRelay } from './ssh-relay.js';

export interface AgentServiceSettings {
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
}

/** How often a connected agent's join token is checked again (revocation ends the session). */
const TOKEN_RECHECK_MS = 2000;

/** Two calls made with the same join token (or both without one). */
function sameCaller(a: CallIdentity | undefined, b: CallIdentity | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.id === b.id;
}

type Outbound = MessageInitShape<typeof ConnectResponseSchema> | { refused: unknown };

export function agentService(deps: {
  /** The orchestrator of the current term; throws (UNAVAILABLE) on a standby. */
  orchestrator: () => Orchestrator;
  contexts: BuildContexts;
  agents: AgentRegistry;
  /** Whether the join token behind a session still works. */
  tokenActive: (identity: CallIdentity | undefined) => boolean;
  settings: AgentServiceSettings;
  stopping: AbortSignal;
  log: Logger;
  sshRelay: SshRelay;
}): ImplOf<typeof AgentService> {
  return {
    connect(requests, ctx) {
      const outbound = new AsyncQueue<Outbound>();
      void (async () => {
        let session: AgentSession | undefined;
        let reason = 'stream ended';
        const iterator = requests[Symbol.asyncIterator]();
        let watchdog: NodeJS.Timeout | undefined;
        // A session belongs to the term it joined in: a later leader never hears of it.
        let orchestrator: Orchestrator | undefined;
        try {
          orchestrator = deps.orchestrator();
          const first = await iterator.next();
          if (first.done || first.value.body.case !== 'hello') {
            throw new BraidError('invalid_argument', 'an agent session must start with a hello');
          }
          const hello = first.value.body.value;
          if (!hello.name || !AGENT_NAME.test(hello.name)) {
            throw new BraidError(
              'invalid_argument',
              `agent name "${hello.name}" is not a valid name`,
            );
          }
          const now = new Date();
          const current: AgentSession = {
            name: hello.name,
            hello,
            connectedAt: now,
            identity: ctx.identity,
            lastHeartbeat: now,
            jobs: new Set(),
            send: (body) => outbound.push({ body }),
            close: (why) => {
              reason = why;
              outbound.close();
            },
          };
          orchestrator.agentConnected(current);
          session = current;
          outbound.push({
            body: {
              case: 'welcome',
              value: {
                coordinatorVersion: BRAID_VERSION,
                heartbeatIntervalMs: deps.settings.heartbeatIntervalMs,
                heartbeatTimeoutMs: deps.settings.heartbeatTimeoutMs,
              },
            },
          });
          let tokenCheckedAt = Date.now();
          watchdog = setInterval(
            () => {
              if (Date.now() - current.lastHeartbeat.getTime() > deps.settings.heartbeatTimeoutMs) {
                current.close(`no heartbeat for ${deps.settings.heartbeatTimeoutMs} ms`);
              }
              if (ctx.identity && Date.now() - tokenCheckedAt >= TOKEN_RECHECK_MS) {
                tokenCheckedAt = Date.now();
                if (!deps.tokenActive(ctx.identity)) {
                  const why = `join token "${ctx.identity.name}" was revoked`;
                  reason = why;
                  // The agent gets UNAUTHENTICATED and stops instead of reconnecting.
                  outbound.push({ refused: new BraidError('unauthenticated', why) });
                  outbound.close();
                }
              }
            },
            Math.min(1000, deps.settings.heartbeatIntervalMs),
          );
          watchdog.unref();
          for (;;) {
            const next = await iterator.next();
            if (next.done || outbound.isClosed) break;
            const body = next.value.body;
            current.lastHeartbeat = new Date();
            switch (body.case) {
              case 'heartbeat':
                break;
              case 'update':
                orchestrator.jobUpdate(current, body.value);
                break;
              case 'log':
                orchestrator.jobLog(current, body.value);
                break;
              case 'result':
                orchestrator.jobResult(current, body.value);
                break;
              case 'hello':
                throw new BraidError('invalid_argument', 'a second hello on one session');
              default:
                break;
            }
          }
        } catch (err) {
          reason = errorLine(err);
          // Refused before joining (bad hello, name in use): the agent gets the status.
          if (!session) outbound.push({ refused: err });
        } finally {
          if (watchdog) clearInterval(watchdog);
          if (session)
            orchestrator?.agentLost(session, ctx.signal.aborted ? 'connection lost' : reason);
          outbound.close();
        }
      })();
      return (async function* () {
        for await (const message of outbound) {
          if ('refused' in message) throw message.refused;
          yield message;
        }
      })();
    },
    forwardSsh(requests, ctx) {
      // As with contexts: only an agent that joined with the job's agent's token.
      const resolve = (jobId: string) => {
        const job = deps.orchestrator().sshJob(jobId);
        const held = deps.agents
          .all()
          .some((session) => sameCaller(session.identity, ctx.identity) && session.jobs.has(jobId));
        if (!job || !held)
          throw new BraidError('permission_denied', `job ${jobId} is not assigned to this agent`);
        return job;
      };
      return deps.sshRelay.relayAgent(
        requests,
        resolve,
        AbortSignal.any([ctx.signal, deps.stopping]),
      );
    },
    async *fetchContext(request, ctx) {
      // An agent fetches only the context of a job assigned to an agent that
      // joined with the same token (or, on an open coordinator, without one).
      const assigned = deps.agents
        .all()
        .some(
          (session) =>
            sameCaller(session.identity, ctx.identity) &&
            [...session.jobs].some(
              (jobId) => deps.orchestrator().contextOfJob(jobId) === request.digest,
            ),
        );
      if (!assigned) {
        throw new BraidError(
          'permission_denied',
          `context ${request.digest} belongs to no job assigned to this agent`,
        );
      }
      const stream = await deps.contexts.open(request.digest, Number(request.offset));
      try {
        for await (const chunk of stream) {
          if (ctx.signal.aborted) return;
          yield { chunk: chunk as Buffer };
        }
      } finally {
        stream.destroy();
      }
    },
  };
}
