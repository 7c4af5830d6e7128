/**
 * The coordinator process: its data dir, store, context store, event log,
 * orchestrator and gRPC services, started and stopped as one unit.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SystemService, EventKind, Severity } from '../gen/braid/v1/system_pb.js';
import { BuildService } from '../gen/braid/v1/build_pb.js';
import { AgentService } from '../gen/braid/v1/agent_pb.js';
import type { CoordinatorConfig } from '../config/settings.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import { archGuardVerifier } from '../oci/image-verifier.js';
import { registryClientFor } from '../oci/registry-factory.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from '../rpc/address.js';
import { addService } from '../rpc/service.js';
import { startServer } from '../rpc/server.js';
import { BRAID_VERSION } from '../version.js';
import { AgentRegistry } from './agent-registry.js';
import { agentService } from './agent-service.js';
import { buildService } from './build-service.js';
import { ContextStore } from './context-store.js';
import { EventLog } from './event-log.js';
import { Orchestrator } from './orchestrator.js';
import { BuildStore } from './store.js';
import { systemService } from './system-service.js';

export interface Coordinator {
  readonly address: GrpcAddress;
  readonly events: EventLog;
  /** Stop taking calls; running calls get `graceMs` before they are cancelled. */
  stop(reason: string, graceMs: number): Promise<void>;
}

export async function startCoordinator(
  config: CoordinatorConfig,
  log: Logger,
  env: Readonly<Record<string, string | undefined>> = {},
): Promise<Coordinator> {
  try {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new BraidError(
      'failed_precondition',
      `cannot create data dir ${config.dataDir}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      { cause: err },
    );
  }
  const startedAt = new Date();
  const events = new EventLog({ retained: config.eventsRetained });
  const stopping = new AbortController();
  const store = new BuildStore(join(config.dataDir, 'braid.db'));
  const contexts = new ContextStore(config.dataDir, config.maxContextBytes);
  await contexts.init();
  const agents = new AgentRegistry();
  const registry = registryClientFor(config, env);
  const orchestrator = new Orchestrator({
    store,
    contexts,
    agents,
    registry,
    log,
    verifyImage: config.archCheck
      ? archGuardVerifier(registry, { budgetBytes: config.archCheckBudgetBytes, log })
      : undefined,
    limits: {
      maxJobAttempts: config.maxJobAttempts,
      jobTimeoutMs: config.jobTimeoutMs,
      buildTimeoutMs: config.buildTimeoutMs,
    },
    onAgent: (kind, name, detail) =>
      events.append({
        kind: kind === 'connected' ? EventKind.AGENT_CONNECTED : EventKind.AGENT_DISCONNECTED,
        severity: kind === 'connected' ? Severity.INFO : Severity.WARNING,
        message: `agent ${name} ${kind}${detail ? `: ${detail}` : ''}`,
        agent: name,
      }),
    onBuildState: (buildId, state, message) =>
      events.append({ kind: EventKind.BUILD_STATE, message: `${state}: ${message}`, buildId }),
  });
  orchestrator.recover();
  const deadlines = setInterval(() => orchestrator.checkDeadlines(), 1000);
  deadlines.unref();
  const running = await startServer({
    address: config.listen,
    insecure: config.insecure,
    limits: {
      maxReceiveMessageBytes: config.maxMessageBytes,
      maxSendMessageBytes: config.maxMessageBytes,
    },
    register(server) {
      addService(
        server,
        SystemService,
        systemService({ events, startedAt, stopping: stopping.signal, log }),
      );
      addService(
        server,
        BuildService,
        buildService({ orchestrator, contexts, agents, stopping: stopping.signal, log }),
      );
      addService(
        server,
        AgentService,
        agentService({
          orchestrator,
          contexts,
          settings: {
            heartbeatIntervalMs: config.heartbeatIntervalMs,
            heartbeatTimeoutMs: config.heartbeatTimeoutMs,
          },
          stopping: stopping.signal,
          log,
        }),
      );
    },
  });
  const address = formatGrpcAddress(running.address);
  if (!isLocalAddress(running.address)) {
    log.warn({ listen: address }, 'serving plaintext gRPC on a non-loopback address (--insecure)');
  }
  events.append({
    kind: EventKind.COORDINATOR_STARTED,
    message: `coordinator ${BRAID_VERSION} listening on ${address}`,
  });
  log.info(
    { listen: address, dataDir: config.dataDir, version: BRAID_VERSION },
    'coordinator started',
  );
  return {
    address: running.address,
    events,
    async stop(reason, graceMs) {
      if (stopping.signal.aborted) return running.stop(graceMs);
      events.append({
        kind: EventKind.COORDINATOR_STOPPING,
        severity: Severity.WARNING,
        message: `coordinator stopping: ${reason}`,
      });
      log.info({ reason, graceMs }, 'coordinator stopping');
      stopping.abort();
      clearInterval(deadlines);
      for (const session of agents.all()) session.close('coordinator stopping');
      await running.stop(graceMs);
      store.close();
      log.info('coordinator stopped');
    },
  };
}
