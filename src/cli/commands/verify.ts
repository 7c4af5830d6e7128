import { Command, Option } from 'commander';
import { addArchCheckOptions, addRegistryOptions } from './manifest.js';

export function verifyCommand(env: NodeJS.ProcessEnv): Command {
  const command = addRegistryOptions(new Command('verify'))
    .description(
      "check each platform of an image index: the arch guard, and a provenance attestation about the platform's digest; exits 1 when a check fails",
    )
    .argument('<ref>', 'image index (or image) reference, by tag or digest')
    .option(
      '--require-native',
      "fail unless each platform's provenance says it was built natively (not under QEMU)",
    )
    .option(
      '--require-provenance',
      'fail unless each platform has an SLSA provenance attestation about its digest',
    )
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    );
  return addArchCheckOptions(command).action(
    async (refText: string, flags: Record<string, unknown>) => {
      const { runVerify } = await import('./verify-run.js');
      await runVerify(refText, flags, env);
    },
  );
}
