import { describe, expect, it } from 'vitest';
import { DEFAULT_ENGINE_URL, createEngine } from '../../src/agent/engine.js';
import { EngineError } from '../../src/agent/engine-error.js';

describe('createEngine', () => {
  it('opens the local socket by default and engines over unix sockets and tcp', () => {
    expect(createEngine().url).toBe(DEFAULT_ENGINE_URL);
    expect(DEFAULT_ENGINE_URL).toBe('unix:///var/run/docker.sock');
    expect(createEngine('unix:///run/user/1000/docker.sock').url).toBe(
      'unix:///run/user/1000/docker.sock',
    );
    expect(createEngine('tcp://10.0.0.7:2375').url).toBe('tcp://10.0.0.7:2375');
    expect(createEngine('tcp://[::1]:2375').url).toBe('tcp://[::1]:2375');
  });

  it('refuses an ssh:// URL without a user, naming it (engine-ssh-url.test.ts has the rest)', () => {
    expect(() => createEngine('ssh://s390x-host')).toThrow(EngineError);
    expect(() => createEngine('ssh://s390x-host')).toThrow(
      expect.objectContaining({
        code: 'invalid_argument',
        message: expect.stringContaining('ssh://s390x-host'),
      }),
    );
  });

  it.each([
    ['http://10.0.0.7:2375'],
    ['unix://relative.sock'],
    ['tcp://10.0.0.7'],
    ['tcp://10.0.0.7:2375/path'],
    ['/var/run/docker.sock'],
  ])('refuses the engine URL %s, naming it', (url) => {
    expect(() => createEngine(url)).toThrow(
      expect.objectContaining({ code: 'invalid_argument', message: expect.stringContaining(url) }),
    );
  });
});
