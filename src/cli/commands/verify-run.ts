import { registrySettings } from '../../config/settings.js';
import { createLogger } from '../../log.js';
import { archGuardCheck } from '../../oci/image-verifier.js';
import { verifyReference } from '../../oci/index-verifier.js';
import { parseReference } from '../../oci/reference.js';
import { registryClientFor } from '../../oci/registry-factory.js';
import { verifiedImagesIn } from '../../oci/verified-images.js';
import { compile } from '../compile.js';
import { EXIT_FAILED } from '../exit.js';
import { fromUser } from '../user-input.js';
import {
  failureLine,
  renderVerification,
  verificationJson,
  verifyFailures,
} from '../verify-report.js';

/**
 * Prints the verification (table or JSON) whatever it found, then one line
 * on stderr per failed check, and exits 1 when any check failed.
 */
export async function runVerify(
  refText: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { requireNative, requireProvenance, output, ...rest } = flags;
  const config = compile(registrySettings(env), rest, env);
  const ref = fromUser(() => parseReference(refText));
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    component: 'verify',
  });
  const client = registryClientFor(config, env);
  const archCheck = archGuardCheck(client, {
    budgetBytes: config.archCheckBudgetBytes,
    log,
    verified: config.archCheckCacheDir ? verifiedImagesIn(config.archCheckCacheDir) : undefined,
  });
  const verification = await verifyReference(client, ref, { archCheck });
  const failures = verifyFailures(verification, {
    requireNative: requireNative === true,
    requireProvenance: requireProvenance === true,
  });
  process.stdout.write(
    output === 'json'
      ? `${JSON.stringify(verificationJson(verification, failures))}\n`
      : renderVerification(verification, failures),
  );
  for (const failure of failures) process.stderr.write(`braid: ${failureLine(failure)}\n`);
  if (failures.length > 0) process.exitCode = EXIT_FAILED;
}
