/**
 * Push the multi-arch busybox base image (Debian's busybox-static for
 * linux/amd64, arm64, arm/v7, ppc64le, s390x) to a registry:
 *   tsx scripts/push-base-image.ts HOST:PORT REPOSITORY [TAG]
 * No public registry is reachable here, so demos and tests start from this.
 */
import { pushBaseImage } from '../test/support/base-image.js';

const [host, repository, tag = 'latest'] = process.argv.slice(2);
if (!host || !repository) {
  process.stderr.write('usage: tsx scripts/push-base-image.ts HOST:PORT REPOSITORY [TAG]\n');
  process.exit(2);
}
const digest = await pushBaseImage(host, repository, tag);
process.stdout.write(`${host}/${repository}:${tag}@${digest}\n`);
