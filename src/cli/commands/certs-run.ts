import { resolve } from 'node:path';
import { UsageError } from '../../errors.js';
import { CERT_FILES, DEFAULT_HOSTS, initCertificates } from '../cert-authority.js';

function days(text: unknown): number {
  if (text === undefined) return 825;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 36_500) {
    throw new UsageError(`--days "${String(text)}": expected 1 to 36500`);
  }
  return n;
}

export async function runCertsInit(flags: Record<string, unknown>): Promise<void> {
  const dir = resolve(String(flags.dir));
  const hosts =
    typeof flags.hosts === 'string'
      ? flags.hosts
          .split(',')
          .map((h) => h.trim())
          .filter(Boolean)
      : [...DEFAULT_HOSTS];
  const written = await initCertificates({
    dir,
    hosts,
    days: days(flags.days),
    force: flags.force === true,
  });
  const at = (name: string) => `${dir}/${name}`;
  process.stdout.write(
    [
      ...written.map((file) => `wrote ${file}`),
      '',
      `coordinator:  --tls-cert ${at(CERT_FILES.server)} --tls-key ${at(CERT_FILES.serverKey)}`,
      `              (add --tls-ca ${at(CERT_FILES.ca)} to require client certificates: mTLS)`,
      `clients:      --tls-ca ${at(CERT_FILES.ca)}`,
      `              (with mTLS also --tls-cert ${at(CERT_FILES.client)} --tls-key ${at(CERT_FILES.clientKey)})`,
      `the server certificate names: ${hosts.join(', ')}`,
      `${CERT_FILES.caKey} signs certificates every braid host trusts: keep it off the farm`,
      '',
    ].join('\n'),
  );
}
