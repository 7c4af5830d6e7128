import { describe, expect, it } from 'vitest';
import { EXIT_FAILED, EXIT_USAGE, exitCodeFor } from '../../src/cli/exit.js';
import { fromUser, sshSettingRefusal } from '../../src/cli/user-input.js';
import { BraidError, ConfigError, RpcError, UsageError } from '../../src/errors.js';
import { InvalidReferenceError, PlatformError, RegistryError } from '../../src/oci/errors.js';
import { SpecError } from '../../src/oci/manifest-spec.js';
import { parsePlatforms } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { SshError } from '../../src/ssh/errors.js';
import { parseSshUrl } from '../../src/ssh/ssh-url.js';

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (err) {
    return err;
  }
  throw new Error('nothing was thrown');
}

describe('exitCodeFor: exit 2 is a UsageError and nothing else', () => {
  it('ends a UsageError with 2, keeping its code invalid_argument and its one line', () => {
    const err = new UsageError('--limit "0": expected 1 to 500');
    expect(exitCodeFor(err)).toBe(EXIT_USAGE);
    expect(EXIT_USAGE).toBe(2);
    expect(err.code).toBe('invalid_argument');
    expect(err.name).toBe('UsageError');
  });

  it('ends a ConfigError with 2: invalid config is bad usage, and still a ConfigError', () => {
    const err = new ConfigError('--listen', 'expected HOST:PORT');
    expect(exitCodeFor(err)).toBe(EXIT_USAGE);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toBeInstanceOf(UsageError);
    expect(err.name).toBe('ConfigError');
    expect(err.key).toBe('--listen');
    expect(err.message).toBe('invalid config --listen: expected HOST:PORT');
  });

  it('ends a spec file that cannot be used (SpecError) with 2', () => {
    expect(exitCodeFor(new SpecError('spec.yaml', 'not valid YAML'))).toBe(EXIT_USAGE);
  });

  it('ends a plain invalid_argument BraidError with 1: the code alone does not make bad usage', () => {
    expect(exitCodeFor(new BraidError('invalid_argument', 'invalid digest "sha256:x"'))).toBe(
      EXIT_FAILED,
    );
    expect(EXIT_FAILED).toBe(1);
  });

  it('ends a remote INVALID_ARGUMENT (RpcError) with 1, as before: the coordinator refused it', () => {
    const err = new RpcError(
      'invalid_argument',
      '/braid.v1.BuildService/SubmitBuild',
      '127.0.0.1:7465',
      'Dockerfile "x" is not in context sha256:...',
    );
    expect(exitCodeFor(err)).toBe(EXIT_FAILED);
  });

  it("ends a registry's invalid_argument answer (RegistryError) with 1, as before", () => {
    const err = new RegistryError('invalid_argument', {
      operation: 'PUT manifest',
      reference: 'r.example/a:1',
      status: 400,
      message: 'manifest invalid',
    });
    expect(exitCodeFor(err)).toBe(EXIT_FAILED);
  });

  it('ends a reference or platform refused outside the CLI with 1 (a registry answer, say)', () => {
    expect(exitCodeFor(new InvalidReferenceError('UPPER/case', 'bad'))).toBe(EXIT_FAILED);
    expect(exitCodeFor(new PlatformError('{"os":"linux"}', 'missing "architecture"'))).toBe(
      EXIT_FAILED,
    );
  });

  it('ends anything that is not a BraidError with 1', () => {
    expect(exitCodeFor(new Error('boom'))).toBe(EXIT_FAILED);
    expect(exitCodeFor('boom')).toBe(EXIT_FAILED);
  });
});

describe('fromUser: a parser of another layer refusing what the user typed', () => {
  it('makes a reference that does not parse a UsageError with the same line (exit 2)', () => {
    const err = thrown(() => fromUser(() => parseReference('UPPER/case:1')));
    expect(err).toBeInstanceOf(UsageError);
    expect(exitCodeFor(err)).toBe(EXIT_USAGE);
    expect((err as UsageError).message).toMatch(/^invalid image reference "UPPER\/case:1": /);
    expect((err as UsageError).cause).toBeInstanceOf(InvalidReferenceError);
  });

  it('makes a platform that does not parse a UsageError (exit 2)', () => {
    const err = thrown(() => fromUser(() => parsePlatforms('linux/amd64,')));
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toMatch(/^invalid platform "linux\/amd64,": /);
  });

  it('makes an SSH URL that does not parse a UsageError (exit 2)', () => {
    const err = thrown(() => fromUser(() => parseSshUrl('http://127.0.0.1:1')));
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toContain('not an ssh:// URL');
  });

  it('returns what parses, and passes other errors through unchanged', () => {
    expect(fromUser(() => parseReference('r.example/a:1')).tag).toBe('1');
    const other = new BraidError('internal', 'boom');
    expect(
      thrown(() =>
        fromUser(() => {
          throw other;
        }),
      ),
    ).toBe(other);
  });

  it('makes only an invalid_argument SshError (a key or known_hosts file) bad usage', () => {
    const file = new SshError('invalid_argument', 'ssh key /k', 'cannot read it (ENOENT)');
    expect(exitCodeFor(sshSettingRefusal(file))).toBe(EXIT_USAGE);
    const refused = new SshError('unauthenticated', 'ssh://u@h:22', 'login refused');
    expect(sshSettingRefusal(refused)).toBe(refused);
    expect(exitCodeFor(refused)).toBe(EXIT_FAILED);
  });
});
