/**
 * docs/coming-from-buildx.md, checked against the real `braid build` so it
 * cannot drift: it lists every `docker buildx build` flag once; every flag
 * braid's --help shows is on the page and every flag the page says braid
 * honours is in --help; every flag it refuses really ends with "braid build
 * does not support --X" and exit 2 (and braid refuses no flag the page does
 * not list as refused); the flags it accepts without effect really pass.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  IGNORED_FLAGS,
  REFUSED_FLAGS,
  REFUSED_VALUES,
  type RefusedFlag,
} from '../../src/cli/buildx/unsupported.js';
import { EXIT_USAGE } from '../../src/cli/exit.js';
import { braid } from '../support/braid-cli.js';
import {
  commandHelp,
  resolveCommand,
  shellInvocations,
  unknownFlags,
} from '../support/cli-flags.js';

const PAGE = fileURLToPath(new URL('../../docs/coming-from-buildx.md', import.meta.url));
const page = await readFile(PAGE, 'utf8');

/**
 * `docker buildx build`'s flags in buildx v0.36 (commands/build.go and the
 * root's --builder and --debug), hidden ones included.
 */
const BUILDX_BUILD_FLAGS = [
  '--add-host',
  '--allow',
  '--annotation',
  '--attest',
  '--build-arg',
  '--build-context',
  '--builder',
  '--cache-from',
  '--cache-to',
  '--call',
  '--cgroup-parent',
  '--check',
  '--compress',
  '--cpu-period',
  '--cpu-quota',
  '-c',
  '--cpu-shares',
  '--cpuset-cpus',
  '--cpuset-mems',
  '-D',
  '--debug',
  '-f',
  '--file',
  '--force-rm',
  '--iidfile',
  '--isolation',
  '--label',
  '--load',
  '-m',
  '--memory',
  '--memory-swap',
  '--metadata-file',
  '--network',
  '--no-cache',
  '--no-cache-filter',
  '-o',
  '--output',
  '--platform',
  '--policy',
  '--print',
  '--progress',
  '--provenance',
  '--pull',
  '--push',
  '-q',
  '--quiet',
  '--resource',
  '--rm',
  '--sbom',
  '--secret',
  '--security-opt',
  '--shm-size',
  '--squash',
  '--ssh',
  '-t',
  '--tag',
  '--target',
  '--ulimit',
];

const STATUSES = ['honoured', 'honoured differently', 'accepted, no effect', 'refused'] as const;
type Status = (typeof STATUSES)[number];

interface Row {
  flags: string[];
  status: string;
}

/** The rows of the table that follows `heading`: its first cell's flags, its second cell. */
function tableAfter(heading: string): Row[] {
  const start = page.indexOf(`\n${heading}\n`);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  const section = page.slice(start + heading.length + 2).split(/\n## /)[0] ?? '';
  return section
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => {
      const [flagsCell = '', status = ''] = line.slice(1).split(' | ');
      const flags = [...flagsCell.matchAll(/`(-[^`]+)`/g)].map((m) => m[1] ?? '');
      return { flags, status: status.trim() };
    });
}

const buildxRows = tableAfter('## Every flag');
const braidRows = tableAfter("## braid's own flags");
const flagsWith = (status: Status) =>
  buildxRows.filter((row) => row.status === status).flatMap((row) => row.flags);

const REFUSED: readonly RefusedFlag[] = [...REFUSED_FLAGS, ...REFUSED_VALUES];

/** `braid build ARGS .` with no coordinator: refusals come before anything is sent. */
async function buildWith(args: readonly string[]) {
  const result = await braid(['build', ...args, '.']);
  return { ...result, lines: result.stderr.trim().split('\n') };
}

describe('docs/coming-from-buildx.md', () => {
  it('lists every docker buildx build flag once, each with a status', () => {
    const listed = buildxRows.flatMap((row) => row.flags);
    expect([...listed].sort()).toEqual([...BUILDX_BUILD_FLAGS].sort());
    for (const row of buildxRows) expect(STATUSES, row.flags.join(', ')).toContain(row.status);
  });

  it('names every flag braid build --help shows', async () => {
    const help = await commandHelp(['build']);
    const onPage = new Set([
      ...flagsWith('honoured'),
      ...flagsWith('honoured differently'),
      ...braidRows.flatMap((row) => row.flags),
    ]);
    const missing = [...help.flags].filter(
      (flag) => flag !== '-h' && flag !== '--help' && !onPage.has(flag),
    );
    expect(missing).toEqual([]);
  });

  it('says braid honours only flags braid build --help shows', async () => {
    const help = await commandHelp(['build']);
    const honoured = [
      ...flagsWith('honoured'),
      ...flagsWith('honoured differently'),
      ...braidRows.flatMap((row) => row.flags),
    ];
    expect(honoured.filter((flag) => !help.flags.has(flag))).toEqual([]);
  });

  it('refuses exactly the flags braid refuses', () => {
    const longOf = (flag: string) =>
      flag.startsWith('--') ? flag : REFUSED.find((f) => f.spec.startsWith(`${flag},`))?.long;
    const pageRefused = new Set(flagsWith('refused').map(longOf));
    const honouredDifferently = new Set(flagsWith('honoured differently'));
    // Refused whatever the value: "refused" on the page.
    expect([...pageRefused].filter((long) => !REFUSED.some((f) => f.long === long))).toEqual([]);
    expect(REFUSED_FLAGS.filter((f) => !pageRefused.has(f.long)).map((f) => f.long)).toEqual([]);
    // Refused for some values: "refused" (the notes say which values pass), or
    // "honoured differently" (the notes say which values are refused).
    const unlisted = REFUSED_VALUES.filter(
      (f) => !pageRefused.has(f.long) && !honouredDifferently.has(f.long),
    );
    expect(unlisted.map((f) => f.long)).toEqual([]);
  });

  it.each(
    REFUSED.flatMap((flag) => {
      const short = /^(-[A-Za-z]),/.exec(flag.spec)?.[1];
      const runs = [flag.example];
      if (short) runs.push([short, ...flag.example.slice(1)]);
      return runs.map((args) => [args.join(' '), flag, args] as const);
    }),
  )(
    'braid build %s exits 2 with one line: braid build does not support ...',
    async (_, flag, args) => {
      const result = await buildWith(args);
      expect(result.code).toBe(EXIT_USAGE);
      expect(result.lines).toHaveLength(1);
      expect(result.lines[0]).toMatch(
        new RegExp(`^braid: braid build does not support ${flag.long}\\b`),
      );
      expect(result.lines[0]).toContain(flag.why);
      expect(result.stdout).toBe('');
    },
  );

  it('accepts the flags it says have no effect, and the values it says are accepted', async () => {
    expect(flagsWith('accepted, no effect').sort()).toEqual(
      IGNORED_FLAGS.map((f) => f.long).sort(),
    );
    const accepted = [
      ...IGNORED_FLAGS.map((f) => [f.long]),
      ['--provenance=false'],
      ['--provenance', 'mode=max'],
      ['--sbom', 'false'],
      ['--attest', 'type=provenance,disabled=true'],
      ['--attest', 'type=sbom,disabled=true'],
      ['--call', 'build'],
      ['--allow', 'network.host'],
      ['--push'],
    ];
    const results = await Promise.all(accepted.map((args) => buildWith(args)));
    results.forEach((result, i) => {
      // Past every flag check: the next problem is the missing tag.
      expect(result.lines, accepted[i]?.join(' ')).toHaveLength(1);
      expect(result.lines[0], accepted[i]?.join(' ')).toMatch(/^braid: no tag given/);
    });
  });

  it('takes the --provenance and --attest values it says it honours, reading them before any context', async () => {
    const missing = '/nonexistent/braid-buildx-doc-context';
    const honoured = [
      ['--provenance=true'],
      ['--provenance', 'mode=max'],
      ['--provenance', 'F'],
      ['--attest', 'type=provenance,mode=min,version=v1,inline-only=true'],
      ['--attest', 'type=sbom,disabled=true', '--attest', 'type=provenance'],
    ];
    const results = await Promise.all(
      honoured.map((args) => braid(['build', ...args, '-t', 'r.example/a:1', missing])),
    );
    results.forEach((result, i) => {
      // Past every flag check: the next problem is the context that is not there.
      const lines = result.stderr.trim().split('\n');
      expect(lines, honoured[i]?.join(' ')).toHaveLength(1);
      expect(lines[0], honoured[i]?.join(' ')).toContain(missing);
      expect(lines[0], honoured[i]?.join(' ')).not.toMatch(/--provenance|--attest/);
    });
  });

  it('refuses the --provenance and --attest values it says are refused, in one line, exit 2', async () => {
    const refusedValues = [
      [
        ['--provenance', 'mode=max,builder-id=https://ci.example/run/7'],
        '--provenance "mode=max,builder-id=https://ci.example/run/7": braid does not support the attribute "builder-id": ',
      ],
      [
        ['--attest', 'type=provenance,version=v0.2'],
        '--attest "type=provenance,version=v0.2": version=v0.2 is not supported: ',
      ],
      [['--attest', 'type=sbom'], '--attest "type=sbom": type=sbom is not supported: '],
    ] as const;
    for (const [args, start] of refusedValues) {
      const result = await buildWith([...args, '-t', 'r.example/a:1']);
      expect(result.code, args.join(' ')).toBe(EXIT_USAGE);
      expect(result.lines, args.join(' ')).toHaveLength(1);
      expect(result.lines[0]?.startsWith(`braid: ${start}`), result.lines[0]).toBe(true);
    }
    const badEnv = await braid(['build', '-t', 'r.example/a:1', '.'], {
      env: { BUILDX_NO_DEFAULT_ATTESTATIONS: 'yes' },
    });
    expect(badEnv.code).toBe(EXIT_USAGE);
    expect(badEnv.stderr.trim()).toBe(
      'braid: BUILDX_NO_DEFAULT_ATTESTATIONS "yes": must be a boolean (1, true, 0 or false)',
    );
  });

  it('refuses the --progress values it says are refused', async () => {
    for (const mode of ['quiet', 'none', 'rawjson']) {
      const result = await buildWith(['--progress', mode, '-t', 'r.example/a:1']);
      expect(result.code, mode).toBe(EXIT_USAGE);
      expect(result.stderr, mode).toContain(`argument '${mode}' is invalid`);
    }
  });

  it('shows braid command lines that use only flags braid has', async () => {
    const blocks = [...page.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
    const invocations = blocks.flatMap((block) => shellInvocations(block, PAGE));
    expect(invocations.length).toBeGreaterThan(0);
    const problems: string[] = [];
    for (const invocation of invocations) {
      const { help, rest } = await resolveCommand(invocation.words);
      for (const flag of unknownFlags(help, rest))
        problems.push(`braid ${help.path} has no ${flag}`);
    }
    expect(problems).toEqual([]);
  });
});
