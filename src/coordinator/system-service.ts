/**
 * braid.v1.SystemService: the coordinator's version and its event stream.
 */
import { hostname } from 'node:os';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { SystemService } from '../gen/braid/v1/system_pb.js';
import type { ImplOf } from '../rpc/service.js';
import { API_VERSIONS, BRAID_VERSION } from '../version.js';
import type { EventLog } from './event-log.js';
import type { Logger } from '../log.js';

const NODE_ARCH_TO_OCI: Record<string, string> = { x64: 'amd64', ia32: '386' };

export function systemService(deps: {
  events: EventLog;
  startedAt: Date;
  /** Aborted when the coordinator stops: followers end instead of holding it up. */
  stopping: AbortSignal;
  log: Logger;
}): ImplOf<typeof SystemService> {
  return {
    version(request, ctx) {
      deps.log.debug({ peer: ctx.peer, clientVersion: request.clientVersion }, 'version asked');
      return {
        version: BRAID_VERSION,
        apiVersions: [...API_VERSIONS],
        startedAt: timestampFromDate(deps.startedAt),
        hostname: hostname(),
        platform: `${process.platform}/${NODE_ARCH_TO_OCI[process.arch] ?? process.arch}`,
      };
    },
    async *events(request, ctx) {
      const kinds = new Set(request.kinds);
      const signal = AbortSignal.any([ctx.signal, deps.stopping]);
      for await (const event of deps.events.read(request.afterSequence, request.follow, signal)) {
        if (kinds.size === 0 || kinds.has(event.kind)) yield { event };
      }
    },
  };
}
