/**
 * The coordinator's view of the farm's agents (ListAgents, as `braid
 * agents` shows it), and bounded waits for one to join or to leave.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { ClientConfig } from '../../config/settings.js';
import { BuildService, type AgentInfo } from '../../gen/braid/v1/build_pb.js';
import { coordinatorClient } from '../client.js';
import { agentJson } from '../progress/build-view.js';

export type AgentView = ReturnType<typeof agentJson>;

export class CoordinatorView {
  private readonly client;

  constructor(private readonly config: ClientConfig) {
    this.client = coordinatorClient(BuildService, config);
  }

  async agents(): Promise<AgentInfo[]> {
    const { agents } = await this.client.listAgents({}, { timeoutMs: this.config.timeoutMs });
    return agents;
  }

  /**
   * Polls until `name` is listed with a connection other than `previous`
   * (its connectedAt, when a restarted agent must be told from the one
   * before it); undefined after `timeoutMs`.
   */
  async waitForJoin(
    name: string,
    timeoutMs: number,
    previous?: number,
  ): Promise<AgentView | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = (await this.agents()).find((agent) => agent.name === name);
      const since = found?.connectedAt ? timestampMs(found.connectedAt) : undefined;
      if (found && (previous === undefined || since !== previous)) return agentJson(found);
      if (Date.now() >= deadline) return undefined;
      await sleep(Math.min(500, Math.max(0, deadline - Date.now())));
    }
  }

  /** Polls until `name` is no longer listed; false after `timeoutMs`. */
  async waitForLeave(name: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!(await this.agents()).some((agent) => agent.name === name)) return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(500, Math.max(0, deadline - Date.now())));
    }
  }

  /** connectedAt (ms) of the agent listed under `name`, if any. */
  async connectedAt(name: string): Promise<number | undefined> {
    const found = (await this.agents()).find((agent) => agent.name === name);
    return found?.connectedAt ? timestampMs(found.connectedAt) : undefined;
  }

  close(): void {
    this.client.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
