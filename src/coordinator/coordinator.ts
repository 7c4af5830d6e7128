/**
 * The coordinator process: its data dir, event log and gRPC server, started
 * and stopped as one unit.
 */
import { mkdirSync } from 'node:fs';
import { SystemService, EventKind, Severity } from '../gen/braid/v1/system_pb.js';
import type { CoordinatorConfig } from '../config/settings.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from '../rpc/address.js';
import { addService } from '../rpc/service.js';
import { startServer } from '../rpc/server.js';
import { BRAID_VERSION } from '../version.js';
import { EventLog } from './event-log.js';
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
      await running.stop(graceMs);
      log.info('coordinator stopped');
    },
  };
}
