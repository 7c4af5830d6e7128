import { Command, Option } from 'commander';
import {
  IGNORED_FLAGS,
  REFUSED_FLAGS,
  REFUSED_VALUES,
  refuseUnsupported,
} from '../buildx/unsupported.js';
import { addClientOptions, collect } from '../options.js';

/** Repeatable in buildx, so repeatable here: every value reaches the parser that refuses it. */
const REPEATABLE = new Set(['--call', '--sbom', '--allow']);

export function buildCommand(env: NodeJS.ProcessEnv): Command {
  const command = addClientOptions(new Command('build'))
    .description('build a multi-platform image on the farm and push one index under every tag')
    .argument('[context]', 'build context directory', '.')
    .option(
      '-t, --tag <ref>',
      'name and tag, e.g. registry.example/team/app:1.4 (repeatable)',
      collect,
    )
    .option('-f, --file <path>', 'Dockerfile (default: CONTEXT/Dockerfile)')
    .option(
      '--platform <list>',
      'target platforms, e.g. linux/amd64,linux/arm64 (repeatable)',
      collect,
    )
    .option(
      '--build-arg <k=v>',
      'build-time variable (repeatable; KEY alone takes it from the environment)',
      collect,
    )
    .option('--target <stage>', 'build stage to stop at')
    .option('--label <k=v>', 'image label (repeatable)', collect)
    .option('--no-cache', 'do not use cache when building')
    .option('--pull', 'always attempt to pull newer base images')
    .option('--platform-tags', 'also push per-platform tags TAG-OS-ARCH[-VARIANT]')
    .option('--metadata-file <file>', 'write the build result as JSON (buildx keys)')
    .option(
      '--request-id <id>',
      "id the coordinator's and agents' log lines about this build carry (env BRAID_REQUEST_ID; default: a new one)",
    )
    .addOption(
      new Option('--progress <mode>', 'progress output')
        .choices(['auto', 'tty', 'plain', 'json'])
        .default('auto'),
    )
    .addOption(
      new Option('--emulation <policy>', 'QEMU use when no native host is connected')
        .choices(['prefer-native', 'native-only', 'any'])
        .default('prefer-native'),
    )
    .option('--detach', 'print the build id once submitted and exit')
    .option(
      '--detach-on-interrupt',
      'Ctrl-C stops watching and leaves the build running (for CI); default: ask on a terminal, else cancel',
    )
    .option(
      '--max-context-bytes <n>',
      'refuse larger contexts (env BRAID_MAX_CONTEXT_BYTES; default 2 GiB)',
    )
    // docker buildx build's flags (docs/coming-from-buildx.md).
    .option('--push', 'push the index under every tag (always: the default and only output)')
    .option(
      '--keep-going',
      'when a platform fails, let the others run to the end (no tag moves; exit 1)',
    )
    .option(
      '--secret <spec>',
      'secret to expose to the build: id=ID[,src=FILE|env=VAR] (repeatable; held in memory only)',
      collect,
    )
    .option(
      '--ssh <spec>',
      'SSH agent socket or keys to expose to the build: default|ID[=SOCKET|KEY[,KEY]] (repeatable; not with --detach)',
      collect,
    )
    .option(
      '--cache-from <spec>',
      'external cache source: REF:TAG or type=registry,ref=REF:TAG (repeatable)',
      collect,
    )
    .option(
      '--cache-to <spec>',
      'cache export: type=inline or type=registry,ref=REF:TAG[,mode=min] (repeatable)',
      collect,
    )
    .option(
      '--annotation <spec>',
      'annotation: [TYPE[,TYPE...]:]KEY=VALUE, TYPE manifest (default), index or manifest-descriptor, optionally TYPE[OS/ARCH] (repeatable)',
      collect,
    )
    .option('--network <mode>', 'networking mode for RUN steps: default, none or host')
    .option(
      '--add-host <host:ip>',
      'add a custom host-to-IP mapping, HOST:IP or HOST=IP (repeatable; host-gateway is the agent host)',
      collect,
    )
    .option(
      '--provenance <spec>',
      'SLSA provenance per platform: true|false or mode=min|max (default min; BUILDX_NO_DEFAULT_ATTESTATIONS=1: none)',
      collect,
    )
    .option(
      '--attest <spec>',
      'attestation: type=provenance[,mode=min|max] or type=provenance|sbom,disabled=true (repeatable)',
      collect,
    )
    .option(
      '--source-date-epoch <seconds>',
      'reproducible image: clamp file, config and history times to this epoch (default: --build-arg or env SOURCE_DATE_EPOCH)',
    )
    .option(
      '--check-reproducible',
      'build each platform twice (on two agents when there are two) and fail, naming the files that differ, unless the images are identical',
    )
    .option(
      '--allow <entitlement>',
      'extra entitlement: only network.host (for --network host)',
      collect,
    )
    .action(async (context: string, flags: Record<string, unknown>) => {
      // Before build-run loads: a flag braid does not support is one line and exit 2.
      refuseUnsupported(flags);
      const { runBuild } = await import('./build-run.js');
      await runBuild(context, flags, env);
    });
  // Accepted so that giving one is refused with the reason, not "unknown option"; not in --help.
  for (const flag of [...REFUSED_FLAGS, ...REFUSED_VALUES.filter((f) => f.long !== '--allow')]) {
    const option = new Option(flag.spec).hideHelp();
    command.addOption(REPEATABLE.has(flag.long) ? option.argParser(collect) : option);
  }
  for (const flag of IGNORED_FLAGS) command.addOption(new Option(flag.spec).hideHelp());
  return command;
}
