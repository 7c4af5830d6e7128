import { Command, Option } from 'commander';
import { addClientOptions, collect } from '../options.js';

export function buildCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('build'))
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
    .action(async (context: string, flags: Record<string, unknown>) => {
      const { runBuild } = await import('./build-run.js');
      await runBuild(context, flags, env);
    });
}
