/**
 * The coordinator process: its data dir, store, token store, context store,
 * event log, orchestrator and gRPC services (behind TLS and token checks),
 * started and stopped as one unit.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SystemService, EventKind, Severity } from '../gen/braid/v1/system_pb.js';
import { BuildService } from '../gen/braid/v1/build_pb.js';
import { AgentService } from '../gen/braid/v1/agent_pb.js';
import type { CoordinatorConfig } from '../config/settings.js';
import { serverTlsFiles } from '../config/tls-files.js';
import { BraidError, ConfigError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { archGuardVerifier } from '../oci/image-verifier.js';
import { verifiedImagesInMemory } from '../oci/verified-images.js';
import { registryClientFor } from '../oci/registry-factory.js';
import { formatPlatform } from '../oci/platform.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from '../rpc/address.js';
import { fromProtoPlatform } from '../rpc/platform.js';
import { addService } from '../rpc/service.js';
import { startServer } from '../rpc/server.js';
import { BRAID_VERSION } from '../version.js';
import { AgentRegistry } from './agent-registry.js';
import { agentService } from './agent-service.js';
import { Authenticator, authRequired } from './auth.js';
import { buildService } from './build-service.js';
import { ContextStore } from './context-store.js';
import type { BuildContexts } from './contexts.js';
import { EventLog, buildStateSeverity } from './event-log.js';
import { startProbeServer, type ProbeServer, type Readiness } from './http-probe-server.js';
import { CoordinatorMetrics, meteredRegistry } from './metrics.js';
import { newBuildId, Orchestrator } from './orchestrator.js';
import { SshRelay } from './ssh-relay.js';
import { pushPreflightFor } from './push-preflight.js';
import { SqliteBuildStore } from './sqlite-build-store.js';
import type { BuildStore } from './store.js';
import { StoredBuilds } from './stored-builds.js';
import type { Leadership, Term } from './leadership.js';
import type { PgBuildStore } from './pg-build-store.js';
import { redactedUrl } from '../pg-url.js';
import { StandbyError } from '../rpc/leader-hint.js';
import { systemService } from './system-service.js';
import { newToken } from './token-format.js';
import { TokenStore, type TokenBook } from './token-store.js';
import type { PgListener } from './pg-notify.js';
import { CHANNELS } from './pg-channels.js';
import { needsLeader, prepareSubmission, submitToStore } from './submission.js';

/** Where the agent of `braid serve` joins: a private socket and a token that live with this process. */
export interface LocalAgentAccess {
  readonly address: GrpcAddress;
  readonly joinToken: string;
}

export interface Coordinator {
  readonly address: GrpcAddress;
  readonly events: EventLog;
  /** Set when started with `localAgent`. */
  readonly localAgent: LocalAgentAccess | undefined;
  /** Where /metrics, /healthz and /readyz are served (when metricsListen is set). */
  readonly probeAddress: GrpcAddress | undefined;
  /** Stop taking calls; running calls get `graceMs` before they are cancelled. */
  stop(reason: string, graceMs: number): Promise<void>;
}

export interface CoordinatorOptions {
  /**
   * Also serve an agent in this process (`braid serve`): plaintext on a unix
   * socket in a fresh private directory, with a join token that exists only
   * in memory. It joins whatever TLS and auth the public address has.
   */
  localAgent?: boolean;
}

export async function startCoordinator(
  config: CoordinatorConfig,
  log: Logger,
  env: Readonly<Record<string, string | undefined>> = {},
  options: CoordinatorOptions = {},
): Promise<Coordinator> {
  // TLS files are checked before anything is created: a bad one is exit 2.
  const tls = serverTlsFiles(config);
  if (config.leaderLeaseMs < 2 * config.leaderPollMs)
    throw new ConfigError(
      'leaderLeaseMs',
      `a lease of ${config.leaderLeaseMs} ms must last at least two renewals (leaderPollMs ${config.leaderPollMs} ms)`,
    );
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
  const store = await openBuildStore(config.store, config.dataDir, log);
  // On PostgreSQL, notifications (tokens changed, events stored) come on a connection of their own.
  const notifications =
    'fencedBy' in store && config.store
      ? new (await import('./pg-notify.js')).PgListener(config.store, log)
      : undefined;
  const tokens = await openTokens(store, notifications, config.dataDir, log).catch(
    async (err: unknown) => {
      await store.close();
      throw err;
    },
  );
  const local = options.localAgent
    ? {
        dir: mkdtempSync(join(tmpdir(), 'braid-serve-')),
        joinToken: newToken('join'),
      }
    : undefined;
  const auth = new Authenticator({
    required: authRequired(config.listen, config.requireAuth),
    tokens,
    log,
    ephemeral: local
      ? [
          {
            token: local.joinToken,
            identity: { id: 'local-agent', name: 'local-agent', kind: 'join' },
          },
        ]
      : [],
  });
  // On a shared PostgreSQL store the contexts live in it too: any coordinator serves any upload.
  const contexts: BuildContexts =
    'fencedBy' in store
      ? new (await import('./pg-context-store.js')).PgContextStore(
          (store as PgBuildStore).pool,
          config.maxContextBytes,
        )
      : new ContextStore(config.dataDir, config.maxContextBytes);
  await contexts.init();
  const agents = new AgentRegistry();
  // Metrics only when someone can read them.
  const metrics: CoordinatorMetrics | undefined = config.metricsListen
    ? new CoordinatorMetrics(
        {
          queuedJobs: (): { platform: string; count: number }[] =>
            (term?.orchestrator.queuedJobsByPlatform() ?? []).map((q) => ({
              platform: formatPlatform(q.platform),
              count: q.count,
            })),
          agents: () =>
            agents.all().map((a) => ({
              native: formatPlatform(fromProtoPlatform(a.hello.nativePlatform)),
              emulated: a.hello.emulatedPlatforms.map((e) =>
                formatPlatform(fromProtoPlatform(e.platform)),
              ),
            })),
        },
        { processMetrics: true },
      )
    : undefined;
  const plainRegistry = registryClientFor(config, env, { onRetry: metrics?.onRegistryRetry });
  const registry = metrics
    ? meteredRegistry(plainRegistry, (err) => metrics.registryFailed(err))
    : plainRegistry;
  const pushPreflight = pushPreflightFor(config, env, log);
  const sshRelay = new SshRelay(log);
  // Known once the server listens (port 0 picks one).
  let boundAddress = formatGrpcAddress(config.listen);
  // The arch guard's memory outlives a term: a digest passed once is passed.
  const verifiedImages = verifiedImagesInMemory();
  /**
   * The orchestrator of one term of leadership. `fenced` is the store as
   * that term writes it; `stepDown` ends the term when a write fails.
   */
  const makeOrchestrator = (
    fenced: BuildStore & { assertLeading?: () => Promise<void> },
    stepDown: (err: unknown) => void,
  ) =>
    new Orchestrator({
      store: fenced,
      onStoreFailure: stepDown,
      beforeTagMove: fenced.assertLeading,
      contexts,
      agents,
      registry,
      log,
      verifyImage: config.archCheck
        ? archGuardVerifier(registry, {
            budgetBytes: config.archCheckBudgetBytes,
            log,
            // A manifest digest pins its layers: an image passed once is not read again
            // (builds of unchanged platforms, re-tags, --check-reproducible's twins).
            verified: verifiedImages,
          })
        : undefined,
      limits: {
        maxJobAttempts: config.maxJobAttempts,
        jobTimeoutMs: config.jobTimeoutMs,
        buildTimeoutMs: config.buildTimeoutMs,
        reattachGraceMs: config.heartbeatTimeoutMs * 2,
        waitForAgentMs: config.waitForAgentMs,
        maxConcurrentStitches: config.maxConcurrentStitches,
      },
      cacheAffinity: {
        enabled: config.cacheAffinity,
        maxAgeMs: config.cacheAffinityMaxAgeMs,
        maxLoadGapPercent: config.cacheAffinityMaxLoadGapPercent,
      },
      onAgent: (kind, name, detail) =>
        events.append({
          kind: kind === 'connected' ? EventKind.AGENT_CONNECTED : EventKind.AGENT_DISCONNECTED,
          severity: kind === 'connected' ? Severity.INFO : Severity.WARNING,
          message: `agent ${name} ${kind}${detail ? `: ${detail}` : ''}`,
          agent: name,
        }),
      onBuildState: (buildId, state, message) =>
        events.append({
          kind: EventKind.BUILD_STATE,
          message: `${state}: ${message}`,
          buildId,
          severity: buildStateSeverity(state),
        }),
      observer: metrics,
      sshRelay,
      provenance: {
        builderId: () => config.builderId || `braid://${boundAddress}`,
        coordinator: () => boundAddress,
      },
      checkPush: pushPreflight && ((tags) => pushPreflight.checkTags(tags)),
    });
  /** This coordinator's term while it leads; undefined while it stands by. */
  let term:
    | {
        orchestrator: Orchestrator;
        deadlines: NodeJS.Timeout;
        ended: AbortController;
        stopAdopting?: () => void;
      }
    | undefined;
  const beginTerm = async (orchestrator: Orchestrator) => {
    await orchestrator.recover();
    const deadlines = setInterval(() => orchestrator.checkDeadlines(), 1000);
    deadlines.unref();
    term = { orchestrator, deadlines, ended: new AbortController() };
    // On a shared store, builds submitted through a standby are taken in when it notifies.
    if (notifications) term.stopAdopting = adoptStoredBuilds(orchestrator, notifications, log);
  };
  const endTerm = (why: string) => {
    if (!term) return;
    clearInterval(term.deadlines);
    term.stopAdopting?.();
    // Its watch streams end UNAVAILABLE: their clients resume at the leader.
    term.ended.abort();
    term = undefined;
    // Its agents reconnect to whoever leads now; its in-flight work is fenced off.
    for (const session of agents.all()) session.close(`the coordinator stopped leading: ${why}`);
  };
  // On PostgreSQL, coordinators sharing the database elect a leader (leadership.ts) once listening.
  const shared = 'fencedBy' in store ? (store as PgBuildStore) : undefined;
  // A standby answers reads from the store, its watchers woken by the leader's notifications.
  const wakeups =
    notifications && new (await import('./pg-notify.js')).BuildEventWakeups(notifications);
  const storedBuilds = new StoredBuilds(store, { wakeups });
  let leadership: Leadership | undefined;
  /** What the services call: the current term's orchestrator, or a standby's refusal. */
  const lead = (): Orchestrator => {
    if (term) return term.orchestrator;
    // UNAVAILABLE naming the leader (message and braid-leader trailer): agents and the CLI follow it.
    throw new StandbyError(leadership?.leaderSeen || undefined);
  };
  if (!shared) {
    // One coordinator on its own store: it leads from the start; a failed write stops it.
    await beginTerm(
      makeOrchestrator(store, (err) => {
        // Memory is ahead of the store now: stop (the error is thrown on), and a restart resumes from it.
        log.fatal({ err: errorLine(err) }, 'the build store refused a write; stopping');
        throw err;
      }),
    );
  }
  /**
   * Stand by until elected, lead until the term ends (lost, or a write of
   * it failed), and stand by again, until the coordinator stops. Each term
   * writes through the store fenced by its epoch and starts as a restart
   * does: from what is stored.
   */
  const leadTerms = async (election: Leadership, pgStore: PgBuildStore): Promise<void> => {
    while (!stopping.signal.aborted) {
      let won: Term;
      try {
        won = await election.campaign(stopping.signal);
      } catch {
        return;
      }
      const stepDown = (err: unknown) => {
        // Memory may be ahead of the store: this term ends; the next starts from the store.
        if (term?.orchestrator !== orchestrator) return;
        log.error(
          { err: errorLine(err), epoch: won.epoch.toString() },
          'a write of this term failed',
        );
        void election.resign();
      };
      const fenced = pgStore.fencedBy(won.epoch);
      const orchestrator = makeOrchestrator(fenced, stepDown);
      try {
        await beginTerm(orchestrator);
      } catch (err) {
        log.error({ err: errorLine(err) }, 'could not resume the builds in flight; standing by');
        fenced.retire();
        await election.resign();
        continue;
      }
      events.append({
        kind: EventKind.COORDINATOR_STARTED,
        message: `coordinator ${boundAddress} leads the farm (epoch ${won.epoch})`,
      });
      await new Promise<void>((resolve) => {
        if (won.lost.aborted || stopping.signal.aborted) return resolve();
        won.lost.addEventListener('abort', () => resolve(), { once: true });
        stopping.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      // Nothing of this term is written from now on: not the re-queues its closing sessions cause.
      fenced.retire();
      if (stopping.signal.aborted) return;
      endTerm(errorLine(won.lost.reason));
    }
  };
  const guard = { guard: auth.guard };
  const running = await startServer({
    address: config.listen,
    insecure: config.insecure,
    tls,
    privateSocket: local ? join(local.dir, 'agent.sock') : undefined,
    limits: {
      maxReceiveMessageBytes: config.maxMessageBytes,
      maxSendMessageBytes: config.maxMessageBytes,
    },
    register(server) {
      addService(
        server,
        SystemService,
        systemService({ events, startedAt, stopping: stopping.signal, log }),
        guard,
      );
      addService(
        server,
        BuildService,
        buildService({
          orchestrator: lead,
          submit: (request, submitter) => {
            const spec = request.spec ?? ({} as never);
            if (term)
              return term.orchestrator.submit(spec, request.requestId, request.secrets, submitter);
            // A standby on the shared store stores the build for the leader, which adopts it.
            if (!shared || needsLeader(request.spec, request.secrets))
              return Promise.reject(new StandbyError(leadership?.leaderSeen || undefined));
            return prepareSubmission(spec, request.requestId, request.secrets, {
              contexts,
              checkPush: pushPreflight && ((tags) => pushPreflight.checkTags(tags)),
              newId: newBuildId,
              clock: () => new Date(),
            }).then((submission) =>
              submitToStore(submission, (writes) =>
                shared.commitAnnounced(writes, CHANNELS.submitted, submission.record.id),
              ),
            );
          },
          reads: () =>
            term
              ? { reads: term.orchestrator, termEnded: term.ended.signal }
              : { reads: storedBuilds },
          contexts,
          agents,
          stopping: stopping.signal,
          log,
          metrics,
          sshRelay,
        }),
        guard,
      );
      addService(
        server,
        AgentService,
        agentService({
          orchestrator: lead,
          contexts,
          agents,
          tokenActive: (identity) => auth.isActive(identity),
          settings: {
            heartbeatIntervalMs: config.heartbeatIntervalMs,
            heartbeatTimeoutMs: config.heartbeatTimeoutMs,
          },
          stopping: stopping.signal,
          sshRelay,
          log,
        }),
        guard,
      );
    },
  }).catch((err: unknown) => {
    // Nothing listens: what started before the server goes, so the process can exit 1 cleanly.
    stopping.abort();
    endTerm('the coordinator failed to start');
    void store.close();
    void tokens.close();
    void notifications?.close();
    if (local) rmSync(local.dir, { recursive: true, force: true });
    throw err;
  });
  const address = formatGrpcAddress(running.address);
  boundAddress = address;
  if (shared && config.store) {
    const { Leadership } = await import('./leadership.js');
    const election = new Leadership(config.store, config.advertise || address, log, {
      pollMs: config.leaderPollMs,
      leaseMs: config.leaderLeaseMs,
    });
    leadership = election;
    void leadTerms(election, shared);
  }
  let serving = true;
  const readiness = (): Readiness => {
    if (stopping.signal.aborted)
      return { ready: false, reason: 'draining: the coordinator is stopping' };
    if (!serving) return { ready: false, reason: 'the gRPC server is not listening' };
    if (!store.isOpen()) return { ready: false, reason: 'the build store is closed' };
    if (!term && leadership?.unreachable !== undefined) {
      return {
        ready: false,
        reason: `standby: the store at ${redactedUrl(config.store ?? '')} is unreachable (${leadership.unreachable})`,
      };
    }
    if (!term) {
      const leader = leadership?.leaderSeen;
      return {
        ready: false,
        reason: `standby: ${leader ? `the leader is ${leader}` : 'no leader elected yet'}`,
      };
    }
    return { ready: true };
  };
  let probe: ProbeServer | undefined;
  if (config.metricsListen) {
    probe = await startProbeServer({
      address: config.metricsListen,
      metrics,
      readiness,
      log,
    }).catch(async (err: unknown) => {
      endTerm('the coordinator failed to start');
      await running.stop(0);
      void store.close();
      void tokens.close();
      void notifications?.close();
      if (local) rmSync(local.dir, { recursive: true, force: true });
      throw err;
    });
    log.info({ metricsListen: probe.url }, 'serving /metrics, /healthz and /readyz');
  }
  if (!tls && !isLocalAddress(running.address)) {
    log.warn(
      { listen: address },
      'serving plaintext gRPC on a non-loopback address (--insecure): traffic and tokens cross the network unencrypted',
    );
  }
  warnIfLockedOut(
    log,
    auth,
    tokens,
    config.store ? `--store ${redactedUrl(config.store)}` : `--data-dir ${config.dataDir}`,
  );
  events.append({
    kind: EventKind.COORDINATOR_STARTED,
    message: `coordinator ${BRAID_VERSION} listening on ${address}`,
  });
  log.info(
    {
      listen: address,
      dataDir: config.dataDir,
      store: config.store ? redactedUrl(config.store) : 'sqlite',
      version: BRAID_VERSION,
      transport: tls ? (tls.ca ? 'mtls' : 'tls') : 'plaintext',
      auth: auth.required ? 'required' : 'optional',
    },
    'coordinator started',
  );
  return {
    address: running.address,
    events,
    localAgent: local
      ? {
          address: { kind: 'unix', path: join(local.dir, 'agent.sock') },
          joinToken: local.joinToken,
        }
      : undefined,
    probeAddress: probe?.address,
    async stop(reason, graceMs) {
      if (stopping.signal.aborted) return running.stop(graceMs);
      events.append({
        kind: EventKind.COORDINATOR_STOPPING,
        severity: Severity.WARNING,
        message: `coordinator stopping: ${reason}`,
      });
      log.info({ reason, graceMs }, 'coordinator stopping');
      stopping.abort();
      const last = term?.orchestrator;
      if (term) clearInterval(term.deadlines);
      term?.stopAdopting?.();
      for (const session of agents.all()) session.close('coordinator stopping');
      await running.stop(graceMs);
      serving = false;
      // Before the store closes: a scrape reads it.
      await probe?.stop();
      // Deferred log lines are written before the store closes.
      await last?.live.flushed().catch(() => undefined);
      term = undefined;
      await leadership?.resign();
      await tokens.close();
      await notifications?.close();
      await store.close();
      if (local) rmSync(local.dir, { recursive: true, force: true });
      log.info('coordinator stopped');
    },
  };
}

/**
 * The build store: PostgreSQL when a store URL is configured (loaded only
 * then), else SQLite in the data dir.
 */
async function openBuildStore(
  url: string | undefined,
  dataDir: string,
  log: Logger,
): Promise<BuildStore> {
  if (url === undefined) return new SqliteBuildStore(join(dataDir, 'braid.db'));
  const { PgBuildStore } = await import('./pg-build-store.js');
  return PgBuildStore.open(url, { log });
}

/**
 * The leader takes in builds that standbys stored: when its term begins,
 * when a standby notifies (NOTIFY is sent in the standby's transaction, so
 * a listening leader cannot miss it), and when notifications resume after
 * their connection failed (some may have been lost then). Returns what
 * stops it (the term's end).
 */
function adoptStoredBuilds(
  orchestrator: Orchestrator,
  notifications: PgListener,
  log: Logger,
): () => void {
  const sweep = () => {
    orchestrator.adoptStored().catch((err: unknown) => {
      log.warn({ err: errorLine(err) }, 'could not take in the builds standbys stored');
    });
  };
  const unsubscribe = notifications.subscribe(CHANNELS.submitted, {
    notified: sweep,
    resumed: sweep,
  });
  sweep();
  return unsubscribe;
}

/**
 * The tokens callers are checked against: in the shared PostgreSQL store
 * when there is one (every coordinator honours every token), else in the
 * data dir's SQLite file.
 */
async function openTokens(
  store: BuildStore,
  notifications: PgListener | undefined,
  dataDir: string,
  log: Logger,
): Promise<TokenBook> {
  if (!notifications) return new TokenStore(join(dataDir, 'braid.db'));
  const { PgTokenBook } = await import('./pg-token-store.js');
  return PgTokenBook.open((store as PgBuildStore).pool, notifications, log);
}

/** Tokens are required and a kind has none: say how to make one. */
function warnIfLockedOut(log: Logger, auth: Authenticator, tokens: TokenBook, where: string): void {
  if (!auth.required) return;
  for (const kind of ['api', 'join'] as const) {
    if (tokens.activeCount(kind) === 0) {
      log.warn(
        { kind, store: where },
        `tokens are required and no ${kind} token exists: create one with braid tokens create --kind ${kind} ${where}`,
      );
    }
  }
}
