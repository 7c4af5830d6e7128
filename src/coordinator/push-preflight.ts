/**
 * The push check of a submitted build: before anything is stored or any job
 * starts, may the coordinator push to every repository the build's tags
 * name? Repositories are checked in parallel under a deadline each; a pass
 * is remembered for a short while, and checks of one repository in flight
 * are shared, so a burst of builds to one repository handshakes once.
 */
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { checkPushAccess, type PushAccess, type PushProbe } from '../oci/push-access.js';
import { familiarReference, type ImageReference } from '../oci/reference.js';
import { registryClientFor, type RegistryClientSettings } from '../oci/registry-factory.js';
import type { Repository } from '../oci/registry.js';

/** How long a passed check is trusted: long enough for a burst, short enough for a revoked login. */
export const PASS_TTL_MS = 60_000;
/** Attempts per request of the check: one retry for a dropped packet, not five. */
export const PUSH_CHECK_ATTEMPTS = 2;
/** Passes remembered at most (the oldest go first). */
const MAX_PASSES = 4096;

/** One repository to check, and the first tag that names it (for the message). */
export interface PushTarget {
  repository: Repository;
  /** `domain/repository`, as the message and the memo name it. */
  name: string;
  tag: ImageReference;
}

/**
 * The distinct repositories of a build's tags, the first tag's first: the
 * agents push each platform's image by digest into the first tag's
 * repository (orchestrator.ts `pushRepository`), and the stitch puts the
 * index, and mounts or copies its children, into every tag's repository.
 */
export function pushTargets(tags: readonly ImageReference[]): PushTarget[] {
  const targets = new Map<string, PushTarget>();
  for (const tag of tags) {
    const name = `${tag.domain}/${tag.repository}`;
    if (!targets.has(name)) {
      targets.set(name, {
        repository: { domain: tag.domain, repository: tag.repository },
        name,
        tag,
      });
    }
  }
  return [...targets.values()];
}

/**
 * `cannot push to docker.io/trial/x (tag -t trial/x): ...`: the tag as the
 * user would have typed it is named when it does not spell the repository.
 */
export function refusalLine(target: PushTarget, reason: string): string {
  const familiar = familiarReference(target.tag).replace(/:latest$/, '');
  const typed = familiar.startsWith(`${target.name}:`) || familiar === target.name;
  return `cannot push to ${target.name}${typed ? '' : ` (tag -t ${familiar})`}: ${reason}`;
}

/** A build refused because a tag's repository takes no push from the coordinator. */
export class PushRefusedError extends BraidError {
  readonly refusals: readonly {
    target: PushTarget;
    access: Exclude<PushAccess, { kind: 'allowed' }>;
  }[];
  constructor(refusals: PushRefusedError['refusals']) {
    super(
      refusals.every((r) => r.access.kind === 'invalid')
        ? 'invalid_argument'
        : 'failed_precondition',
      refusals.map((r) => refusalLine(r.target, r.access.reason)).join('; '),
    );
    this.refusals = refusals;
  }
}

export interface PushPreflightOptions {
  registry: PushProbe;
  /** Deadline of one repository's check (handshake, token, probe). */
  deadlineMs: number;
  log: Logger;
  passTtlMs?: number;
  clock?: () => number;
  /** The check itself (push-access.ts); tests play it. */
  check?: typeof checkPushAccess;
}

export class PushPreflight {
  /** Passed repositories, until when (ms), oldest first. */
  private readonly passes = new Map<string, number>();
  /** Checks under way, shared by the builds that need them. */
  private readonly inFlight = new Map<string, Promise<PushAccess>>();
  private readonly clock: () => number;
  private readonly passTtlMs: number;
  private readonly check: typeof checkPushAccess;

  constructor(private readonly options: PushPreflightOptions) {
    this.clock = options.clock ?? Date.now;
    this.passTtlMs = options.passTtlMs ?? PASS_TTL_MS;
    this.check = options.check ?? checkPushAccess;
  }

  /** Resolves when every tag's repository takes a push; else throws PushRefusedError. */
  async checkTags(tags: readonly ImageReference[]): Promise<void> {
    const now = this.clock();
    const unknown = pushTargets(tags).filter((t) => (this.passes.get(t.name) ?? 0) <= now);
    if (unknown.length === 0) return;
    const answers = await Promise.all(
      unknown.map(async (target) => ({ target, access: await this.accessOf(target) })),
    );
    const refusals = answers.flatMap(({ target, access }) =>
      access.kind === 'allowed' ? [] : [{ target, access }],
    );
    if (refusals.length > 0) throw new PushRefusedError(refusals);
  }

  private accessOf(target: PushTarget): Promise<PushAccess> {
    const running = this.inFlight.get(target.name);
    if (running) return running;
    const startedAt = this.clock();
    const checked = this.check(this.options.registry, target.repository, {
      deadlineMs: this.options.deadlineMs,
    })
      .catch((err: unknown): PushAccess => ({ kind: 'unreachable', reason: errorLine(err) }))
      .then((access) => {
        this.inFlight.delete(target.name);
        const durationMs = this.clock() - startedAt;
        if (access.kind === 'allowed') {
          this.remember(target.name);
          this.options.log.debug(
            { repository: target.name, proof: access.proof, durationMs },
            'push check passed',
          );
        } else {
          this.options.log.info(
            { repository: target.name, refusal: access.kind, reason: access.reason, durationMs },
            'push check refused',
          );
        }
        return access;
      });
    this.inFlight.set(target.name, checked);
    return checked;
  }

  private remember(name: string): void {
    // Re-inserted, so the map stays in expiry order and the oldest pass goes first.
    this.passes.delete(name);
    this.passes.set(name, this.clock() + this.passTtlMs);
    for (const old of this.passes.keys()) {
      if (this.passes.size <= MAX_PASSES) break;
      this.passes.delete(old);
    }
  }
}

export interface PushCheckSettings extends RegistryClientSettings {
  pushCheck: boolean;
  pushCheckTimeoutMs: number;
}

/**
 * The coordinator's push check, with a registry client of its own: the
 * coordinator's credentials and insecure registries, but the check's short
 * deadline and few attempts instead of a push's. Undefined when turned off.
 */
export function pushPreflightFor(
  settings: PushCheckSettings,
  env: Readonly<Record<string, string | undefined>>,
  log: Logger,
): PushPreflight | undefined {
  if (!settings.pushCheck) return undefined;
  const registry = registryClientFor(
    {
      ...settings,
      registryTimeoutMs: settings.pushCheckTimeoutMs,
      registryRetries: PUSH_CHECK_ATTEMPTS,
    },
    env,
  );
  return new PushPreflight({ registry, deadlineMs: settings.pushCheckTimeoutMs, log });
}
