import { Command, Option } from 'commander';
import { addLogOptions, collect } from '../options.js';

/** How a command reaches registries; `braid verify` takes the same flags. */
export function addRegistryOptions(command: Command): Command {
  return addLogOptions(command)
    .option(
      '--insecure-registry <host>',
      'plain HTTP to this HOST[:PORT] (repeatable; env BRAID_INSECURE_REGISTRY=a,b)',
      collect,
    )
    .option(
      '--registry-timeout-ms <ms>',
      'deadline per registry request (env BRAID_REGISTRY_TIMEOUT_MS)',
    )
    .option('--registry-retries <n>', 'attempts per registry request (env BRAID_REGISTRY_RETRIES)');
}

/** The arch guard's budget and cache, for every command that runs it. */
export function addArchCheckOptions(command: Command): Command {
  return command
    .option(
      '--arch-check-budget-bytes <n>',
      'layer bytes the arch check may read per image (env BRAID_ARCH_CHECK_BUDGET_BYTES)',
    )
    .option(
      '--arch-check-cache-dir <dir>',
      'where passed arch checks are remembered by digest; "" for nowhere (env BRAID_ARCH_CHECK_CACHE_DIR)',
    );
}

function createCommand(env: NodeJS.ProcessEnv): Command {
  const command = addRegistryOptions(new Command('create'))
    .description(
      'stitch images or indexes into one multi-platform index and push it under every tag',
    )
    .argument('[sources...]', 'images or indexes (by tag or digest) to put in the index')
    .option(
      '-t, --tag <target>',
      'target reference (repeatable); every tag points at the same index',
      collect,
    )
    .option(
      '--from-spec <file>',
      'manifest-tool spec YAML (image, tags, manifests[].image/platform)',
    )
    .option('--no-attestations', 'drop attestation manifests from source indexes')
    .addOption(
      new Option('--format <format>', 'index media type')
        .choices(['auto', 'oci', 'docker'])
        .default('auto'),
    )
    .option('--annotation <key=value>', 'annotation on the index (repeatable)', collect)
    .option('--dry-run', 'print the index instead of pushing it')
    .option('--no-arch-check', 'skip checking that binaries match each platform');
  return addArchCheckOptions(command).action(
    async (sourceArgs: string[], flags: Record<string, unknown>) => {
      const { runManifestCreate } = await import('./manifest-run.js');
      await runManifestCreate(sourceArgs, flags, env);
    },
  );
}

function inspectCommand(env: NodeJS.ProcessEnv): Command {
  return addRegistryOptions(new Command('inspect'))
    .description('show an image or index: platforms, digests, sizes, attestations (or --raw bytes)')
    .argument('<ref>', 'image reference (tag or digest)')
    .option('--raw', 'print the manifest bytes exactly as the registry holds them')
    .action(async (refText: string, flags: Record<string, unknown>) => {
      const { runManifestInspect } = await import('./manifest-run.js');
      await runManifestInspect(refText, flags, env);
    });
}

export function manifestCommand(env: NodeJS.ProcessEnv): Command {
  return new Command('manifest')
    .description('create and inspect multi-platform image indexes in a registry')
    .addCommand(createCommand(env))
    .addCommand(inspectCommand(env));
}
