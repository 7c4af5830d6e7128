/**
 * What a host needs before the agent goes on it: Node.js >= 20.11 (the
 * bundle's target), tar, a Docker engine that answers on its socket, and
 * — for a systemd unit — systemd running and root (or sudo without a
 * password). Each missing piece is one line saying what to install or do.
 */
import { FarmError } from './errors.js';
import { lastLine, shellQuote, type RemoteHost } from './remote-host.js';

export const MIN_NODE: readonly [number, number] = [20, 11];

export interface HostFacts {
  uid: number;
  hostname: string;
  /** `uname -m`. */
  arch: string;
  /** Absolute path of node on the login user's PATH. */
  node: string;
  nodeVersion: string;
  systemd: boolean;
  sudo: boolean;
  dockerGroup: boolean;
  /** How the agent will run: a systemd unit, or the supervisor script. */
  service: 'systemd' | 'supervised';
}

const PROBE = `
echo "uid=$(id -u)"
echo "hostname=$(hostname 2>/dev/null || uname -n)"
echo "arch=$(uname -m)"
node=$(command -v node 2>/dev/null || command -v nodejs 2>/dev/null || true)
echo "node=$node"
if [ -n "$node" ]; then echo "node_version=$("$node" -p process.versions.node 2>/dev/null)"; fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd=yes; else echo systemd=no; fi
if command -v tar >/dev/null 2>&1; then echo tar=yes; else echo tar=no; fi
if command -v setsid >/dev/null 2>&1; then echo setsid=yes; else echo setsid=no; fi
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo sudo=yes; else echo sudo=no; fi
if getent group docker >/dev/null 2>&1; then echo docker_group=yes; else echo docker_group=no; fi
`;

/** GET /_ping on the engine's unix socket, with the host's own node (no curl needed). */
const PING = [
  "const s=require('net').connect(process.argv[1]);let b='';",
  "s.setTimeout(5000,()=>{console.log('no answer within 5 s');process.exit(3)});",
  "s.on('error',e=>{console.log(e.code||e.message);process.exit(2)});",
  "s.on('connect',()=>s.write('GET /_ping HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n'));",
  "s.on('data',d=>b+=d);",
  "s.on('end',()=>{const ok=/\\r\\n\\r\\nOK$/.test(b);console.log(ok?'OK':'answered '+JSON.stringify(b.split('\\r\\n')[0]));process.exit(ok?0:4)});",
].join('');

function parseFacts(text: string): Record<string, string> {
  const facts: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) facts[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return facts;
}

export function nodeVersionOk(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
}

export interface HostCheckOptions {
  wantSystemd: boolean;
  /** The engine's unix socket there; undefined for a tcp:// or ssh:// engine (not checked). */
  engineSocket: string | undefined;
}

export async function checkHost(host: RemoteHost, options: HostCheckOptions): Promise<HostFacts> {
  const facts = parseFacts(await host.mustRun('probing the host', PROBE, 30_000));
  const where = host.display;
  const wanted = `Node.js >= ${MIN_NODE.join('.')}`;
  if (!facts.node) {
    throw new FarmError(
      'failed_precondition',
      where,
      `node is not on the PATH of ${host.target.user}: install ${wanted} there (e.g. apt-get install nodejs, or from nodejs.org)`,
    );
  }
  const nodeVersion = facts.node_version ?? '';
  if (!nodeVersionOk(nodeVersion)) {
    throw new FarmError(
      'failed_precondition',
      where,
      `${facts.node} is version ${nodeVersion || 'unknown'}: braid's agent needs ${wanted}; install a newer Node.js there`,
    );
  }
  if (facts.tar !== 'yes') {
    throw new FarmError(
      'failed_precondition',
      where,
      'tar is not installed: install it (apt-get install tar)',
    );
  }
  const uid = Number(facts.uid);
  const systemd = facts.systemd === 'yes';
  const sudo = facts.sudo === 'yes';
  const service = options.wantSystemd && systemd ? 'systemd' : 'supervised';
  if (service === 'systemd') {
    if (uid !== 0 && !sudo) {
      throw new FarmError(
        'permission_denied',
        where,
        `installing a systemd unit needs root: log in as root, allow ${host.target.user} sudo without a password, or pass --no-systemd`,
      );
    }
    if (facts.docker_group !== 'yes') {
      throw new FarmError(
        'failed_precondition',
        where,
        "there is no docker group: the unit runs the agent as braid-agent with SupplementaryGroups=docker; install Docker from the distribution's package (docker.io) or pass --no-systemd",
      );
    }
    if (uid !== 0) host.useSudo();
  } else if (facts.setsid !== 'yes') {
    throw new FarmError(
      'failed_precondition',
      where,
      'setsid is not installed: the supervised agent needs it (apt-get install util-linux)',
    );
  }
  if (options.engineSocket !== undefined)
    await pingEngine(host, facts.node, options.engineSocket, service);
  return {
    uid,
    hostname: facts.hostname ?? '',
    arch: facts.arch ?? '',
    node: facts.node,
    nodeVersion,
    systemd,
    sudo,
    dockerGroup: facts.docker_group === 'yes',
    service,
  };
}

async function pingEngine(
  host: RemoteHost,
  node: string,
  socket: string,
  service: HostFacts['service'],
): Promise<void> {
  // The unit's agent reaches the engine through root's docker group; the supervised one as this user.
  const ping = await host.run(
    `${shellQuote(node)} -e ${shellQuote(PING)} ${shellQuote(socket)}`,
    30_000,
    service === 'systemd',
  );
  if (ping.code !== 0) {
    const why = lastLine(ping.stdout) || lastLine(ping.stderr) || `exit ${ping.code}`;
    const hint =
      why === 'EACCES'
        ? `${host.target.user} may not open it: add the user to the docker group, or log in as root`
        : 'is the Docker engine installed and running there (systemctl start docker)?';
    throw new FarmError(
      'failed_precondition',
      host.display,
      `the Docker engine does not answer on ${socket} (${why}); ${hint}`,
    );
  }
}
