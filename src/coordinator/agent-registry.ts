/**
 * The agents connected now: their hello, their heartbeats, what they run,
 * and how to send them a message.
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { AgentHello, ConnectResponseSchema } from '../gen/braid/v1/agent_pb.js';
import { AgentInfoSchema, type AgentInfo } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import { fromProtoPlatform } from '../rpc/platform.js';
import type { CallIdentity } from '../rpc/service.js';
import type { AgentView } from './scheduler.js';

export interface AgentSession {
  readonly name: string;
  readonly hello: AgentHello;
  readonly connectedAt: Date;
  /** The join token it connected with (undefined on an open loopback coordinator). */
  readonly identity?: CallIdentity | undefined;
  lastHeartbeat: Date;
  /** Jobs assigned to it and not yet finished. */
  readonly jobs: Set<string>;
  send(message: MessageInitShape<typeof ConnectResponseSchema>['body']): void;
  /** End the session from the coordinator's side. */
  close(reason: string): void;
}

export class AgentRegistry {
  private readonly sessions = new Map<string, AgentSession>();
  /** Each session's view, made once from its hello: only `running` changes. */
  private readonly viewOf = new WeakMap<AgentSession, AgentView>();

  add(session: AgentSession): void {
    if (this.sessions.has(session.name)) {
      throw new BraidError(
        'already_exists',
        `an agent named "${session.name}" is already connected`,
      );
    }
    this.sessions.set(session.name, session);
  }

  remove(name: string, session?: AgentSession): boolean {
    const current = this.sessions.get(name);
    if (!current || (session && current !== session)) return false;
    this.sessions.delete(name);
    return true;
  }

  get(name: string): AgentSession | undefined {
    return this.sessions.get(name);
  }

  all(): AgentSession[] {
    return [...this.sessions.values()];
  }

  /** What the scheduler sees: one view per agent, its load as of this call. */
  views(): AgentView[] {
    const views: AgentView[] = [];
    for (const session of this.sessions.values()) {
      let view = this.viewOf.get(session);
      if (view === undefined) {
        view = {
          name: session.name,
          nativePlatform: fromProtoPlatform(session.hello.nativePlatform),
          emulated: session.hello.emulatedPlatforms.map((e) => ({
            platform: fromProtoPlatform(e.platform),
            handler: e.handler,
          })),
          capacity: Math.max(1, session.hello.capacity),
          running: 0,
          labels: { ...session.hello.labels },
          engineId: session.hello.engineId,
        };
        this.viewOf.set(session, view);
      }
      view.running = session.jobs.size;
      views.push(view);
    }
    return views;
  }

  info(): AgentInfo[] {
    return this.all().map((s) =>
      create(AgentInfoSchema, {
        name: s.name,
        version: s.hello.version,
        nativePlatform: s.hello.nativePlatform,
        emulatedPlatforms: s.hello.emulatedPlatforms,
        capacity: Math.max(1, s.hello.capacity),
        running: s.jobs.size,
        labels: s.hello.labels,
        connectedAt: timestampFromDate(s.connectedAt),
        lastHeartbeat: timestampFromDate(s.lastHeartbeat),
        engineVersion: s.hello.engineVersion,
        engineId: s.hello.engineId,
      }),
    );
  }
}
