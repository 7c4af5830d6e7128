/**
 * braid-agent.service as `braid farm add` writes it: the settings of
 * deploy/systemd/braid-agent.service (user, drain on stop, restart policy,
 * sandboxing), with the bundle's node and paths under the install prefix.
 * test/unit/farm-systemd-unit.test.ts keeps the two in step.
 */

export const AGENT_UNIT = 'braid-agent.service';
export const AGENT_UNIT_FILE = `/etc/systemd/system/${AGENT_UNIT}`;
export const AGENT_SYSUSERS_FILE = '/etc/sysusers.d/braid-agent.conf';

export interface UnitPaths {
  /** Absolute path of node on the host. */
  node: string;
  /** The bundle's runner, PREFIX/lib/cli.mjs. */
  cli: string;
  /** PREFIX/etc/agent.env. */
  envFile: string;
}

/** Directories the unit's ProtectHome=yes hides from the agent. */
export const HIDDEN_BY_PROTECT_HOME = ['/home', '/root', '/run/user'];

export function renderSysusers(): string {
  return [
    '# Written by braid farm add: the user braid-agent.service runs as.',
    '#Type Name        ID  GECOS          Home directory        Shell',
    'u     braid-agent -   "braid agent"  /var/lib/braid-agent  -',
    '',
  ].join('\n');
}

export function renderAgentUnit(paths: UnitPaths): string {
  return `# Written by braid farm add (the settings of deploy/systemd/braid-agent.service).
# Change the agent's settings with braid farm add, not here; remove with braid farm remove.

[Unit]
Description=braid agent (builds on the local Docker engine for a braid coordinator)
After=network-online.target docker.service
Wants=network-online.target
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=exec
User=braid-agent
Group=braid-agent
SupplementaryGroups=docker
StateDirectory=braid-agent
StateDirectoryMode=0700
CacheDirectory=braid-agent
CacheDirectoryMode=0700
Environment=HOME=/var/lib/braid-agent
Environment=BRAID_CACHE_DIR=/var/cache/braid-agent
Environment=BRAID_LOG_FORMAT=json
EnvironmentFile=${paths.envFile}
ExecStart=${paths.node} ${paths.cli} agent

KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=90s
Restart=on-failure
RestartSec=10s
RestartPreventExitStatus=2
LimitNOFILE=65536
UMask=0077

NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
`;
}
