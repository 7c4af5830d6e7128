import { describe, expect, it } from 'vitest';
import {
  PushPreflight,
  PushRefusedError,
  pushTargets,
  refusalLine,
} from '../../src/coordinator/push-preflight.js';
import { createLogger } from '../../src/log.js';
import type { PushAccess, PushProbe } from '../../src/oci/push-access.js';
import { parseReference } from '../../src/oci/reference.js';
import type { Repository } from '../../src/oci/registry.js';

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });
const tags = (...texts: string[]) => texts.map((t) => parseReference(t));

/** A check played in memory: answers by repository name, counts calls, may wait for a release. */
function fakeCheck(answers: Record<string, PushAccess>) {
  const calls: string[] = [];
  let release: (() => void) | undefined;
  let gate: Promise<void> | undefined;
  const check = async (_registry: PushProbe, repo: Repository): Promise<PushAccess> => {
    const name = `${repo.domain}/${repo.repository}`;
    calls.push(name);
    if (gate) await gate;
    return answers[name] ?? { kind: 'allowed', proof: 'upload' };
  };
  return {
    check,
    calls,
    hold() {
      gate = new Promise<void>((resolve) => (release = resolve));
    },
    release() {
      gate = undefined;
      release?.();
    },
  };
}

function preflight(fake: ReturnType<typeof fakeCheck>, clock = { now: 0 }) {
  return new PushPreflight({
    registry: {} as PushProbe,
    deadlineMs: 1000,
    log,
    passTtlMs: 60_000,
    clock: () => clock.now,
    check: fake.check,
  });
}

async function refusal(run: Promise<unknown>): Promise<PushRefusedError> {
  const err = await run.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (err instanceof PushRefusedError) return err;
  throw new Error(`expected a PushRefusedError, got ${String(err)}`);
}

describe('the repositories a build pushes to', () => {
  it('are the distinct repositories of its tags, the first tag’s (the agents’ push repository) first', () => {
    const targets = pushTargets(
      tags('127.0.0.1:5000/team/app:1', 'ghcr.io/o/app:1', '127.0.0.1:5000/team/app:latest'),
    );
    expect(targets.map((t) => t.name)).toEqual(['127.0.0.1:5000/team/app', 'ghcr.io/o/app']);
    expect(targets[0]?.tag.tag).toBe('1');
  });
});

describe('a refusal line', () => {
  it('names the tag as typed when it does not spell the repository', () => {
    const [hub] = pushTargets(tags('trial/x'));
    expect(refusalLine(hub!, 'registry-1.docker.io could not be resolved (ENOTFOUND)')).toBe(
      'cannot push to docker.io/trial/x (tag -t trial/x): registry-1.docker.io could not be resolved (ENOTFOUND)',
    );
    const [official] = pushTargets(tags('alpine:3'));
    expect(refusalLine(official!, 'why')).toBe(
      'cannot push to docker.io/library/alpine (tag -t alpine:3): why',
    );
  });

  it('names only the repository when the tag spells it', () => {
    const [local] = pushTargets(tags('127.0.0.1:5999/app:1'));
    expect(refusalLine(local!, 'nothing listens on 127.0.0.1:5999 (connection refused)')).toBe(
      'cannot push to 127.0.0.1:5999/app: nothing listens on 127.0.0.1:5999 (connection refused)',
    );
  });
});

describe('the push preflight', () => {
  it('checks every repository in parallel and refuses in one line naming each that failed', async () => {
    const fake = fakeCheck({
      'r.example/a': { kind: 'unreachable', reason: 'r.example could not be resolved (ENOTFOUND)' },
      'q.example/c': { kind: 'denied', reason: 'the registry refused push (403 DENIED: no)' },
    });
    fake.hold();
    const checking = preflight(fake).checkTags(
      tags('r.example/a:1', 'r.example/b:1', 'q.example/c:1'),
    );
    await new Promise((r) => setTimeout(r, 10));
    // All three started before any answered.
    expect(fake.calls).toEqual(['r.example/a', 'r.example/b', 'q.example/c']);
    fake.release();
    const err = await refusal(checking);
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toBe(
      'cannot push to r.example/a: r.example could not be resolved (ENOTFOUND); cannot push to q.example/c: the registry refused push (403 DENIED: no)',
    );
    expect(err.message).not.toContain('\n');
  });

  it('refuses with INVALID_ARGUMENT when the registry called the name itself wrong', async () => {
    const fake = fakeCheck({
      'r.example/a': {
        kind: 'invalid',
        reason: 'the registry refused the name (400 NAME_INVALID: x)',
      },
    });
    const err = await refusal(preflight(fake).checkTags(tags('r.example/a:1')));
    expect(err.code).toBe('invalid_argument');
  });

  it('remembers a pass for its lifetime, then checks again', async () => {
    const fake = fakeCheck({});
    const clock = { now: 1_000 };
    const checks = preflight(fake, clock);
    await checks.checkTags(tags('r.example/a:1'));
    await checks.checkTags(tags('r.example/a:2'));
    clock.now += 59_999;
    await checks.checkTags(tags('r.example/a:3'));
    expect(fake.calls).toEqual(['r.example/a']);
    clock.now += 1;
    await checks.checkTags(tags('r.example/a:4'));
    expect(fake.calls).toEqual(['r.example/a', 'r.example/a']);
  });

  it('does not remember a refusal: the next build asks again', async () => {
    const fake = fakeCheck({ 'r.example/a': { kind: 'denied', reason: 'no' } });
    const checks = preflight(fake);
    await refusal(checks.checkTags(tags('r.example/a:1')));
    await refusal(checks.checkTags(tags('r.example/a:1')));
    expect(fake.calls).toHaveLength(2);
  });

  it('shares one check among a burst of builds to the same repository', async () => {
    const fake = fakeCheck({});
    fake.hold();
    const checks = preflight(fake);
    const burst = Array.from({ length: 200 }, (_, i) => checks.checkTags(tags(`r.example/a:${i}`)));
    await new Promise((r) => setTimeout(r, 10));
    fake.release();
    await Promise.all(burst);
    expect(fake.calls).toEqual(['r.example/a']);
  });

  it('turns a check that throws into a refusal, not a crash', async () => {
    const checks = new PushPreflight({
      registry: {} as PushProbe,
      deadlineMs: 1000,
      log,
      check: () => Promise.reject(new Error('docker config unreadable')),
    });
    const err = await refusal(checks.checkTags(tags('r.example/a:1')));
    expect(err.message).toBe('cannot push to r.example/a: docker config unreadable');
  });
});
