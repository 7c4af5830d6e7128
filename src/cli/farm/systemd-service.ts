/**
 * The agent as braid-agent.service: user braid-agent (systemd-sysusers),
 * enabled at boot, drained by `systemctl stop` (SIGTERM, TimeoutStopSec).
 * Runs as root on the host (sudo -n for another login user).
 */
import type { AgentService, ServiceFile, ServiceOptions, StopOutcome } from './agent-service.js';
import type { RemoteHost } from './remote-host.js';
import {
  AGENT_SYSUSERS_FILE,
  AGENT_UNIT,
  AGENT_UNIT_FILE,
  renderAgentUnit,
  renderSysusers,
} from './systemd-unit.js';

export class SystemdService implements AgentService {
  readonly kind = 'systemd';

  constructor(private readonly options: ServiceOptions) {}

  files(): ServiceFile[] {
    const { paths, node } = this.options;
    return [
      { path: AGENT_SYSUSERS_FILE, content: renderSysusers(), mode: 0o644 },
      {
        path: AGENT_UNIT_FILE,
        content: renderAgentUnit({ node, cli: paths.cli, envFile: paths.envFile }),
        mode: 0o644,
      },
    ];
  }

  envExtra(): Record<string, string> {
    return {};
  }

  async running(host: RemoteHost): Promise<boolean> {
    const result = await host.run(`systemctl is-active --quiet ${AGENT_UNIT}`, 30_000, true);
    return result.code === 0;
  }

  async start(host: RemoteHost): Promise<void> {
    await host.mustRun(
      `starting ${AGENT_UNIT}`,
      `systemd-sysusers ${AGENT_SYSUSERS_FILE} && systemctl daemon-reload && ` +
        `systemctl enable ${AGENT_UNIT} && systemctl restart ${AGENT_UNIT}`,
      120_000,
      true,
    );
  }

  async stop(host: RemoteHost, drainTimeoutMs: number): Promise<StopOutcome> {
    // systemctl stop waits for the drain itself, up to the unit's TimeoutStopSec, then kills.
    const result = await host.mustRun(
      `stopping ${AGENT_UNIT}`,
      `systemctl disable ${AGENT_UNIT} >/dev/null 2>&1; systemctl stop ${AGENT_UNIT} && ` +
        `systemctl show -p Result --value ${AGENT_UNIT}`,
      Math.max(drainTimeoutMs, 120_000),
      true,
    );
    return { drained: result.trim() !== 'timeout' };
  }

  async uninstall(host: RemoteHost): Promise<void> {
    await host.mustRun(
      `removing ${AGENT_UNIT}`,
      `rm -f ${AGENT_UNIT_FILE} ${AGENT_SYSUSERS_FILE} && systemctl daemon-reload && systemctl reset-failed ${AGENT_UNIT} 2>/dev/null; true`,
      60_000,
      true,
    );
  }

  async logTail(host: RemoteHost, lines: number): Promise<string> {
    const result = await host.run(
      `journalctl -u ${AGENT_UNIT} -n ${lines} --no-pager -o cat`,
      30_000,
      true,
    );
    return result.stdout;
  }
}
