/**
 * The CLI's end of SSH agent forwarding: one BuildService.ForwardSsh stream
 * per build, on which the coordinator opens a connection for every `RUN
 * --mount=type=ssh` of the build; each is served by the forwarded agents of
 * this machine (ssh-forward.ts) until either side closes it.
 */
import { Duplex } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ForwardSshRequestSchema, ForwardSshResponse } from '../gen/braid/v1/build_pb.js';
import { errorLine } from '../errors.js';
import type { BidiCall } from '../rpc/client.js';

type Request = MessageInitShape<typeof ForwardSshRequestSchema>;

/** What serves one connection: the agent protocol on `stream` for agent `id`. */
export interface AgentServer {
  serve(id: string, stream: Duplex): void;
  close(): void;
}

/** Chunks sent to the coordinator stay under its 256 KiB cap. */
const MAX_CHUNK_BYTES = 64 * 1024;

/**
 * Two connected duplex streams: what is written to one is read from the other.
 * (stream.duplexPair arrives only in Node 22.)
 */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (other: () => Duplex): Duplex =>
    new Duplex({
      write(chunk: Buffer, _encoding, done) {
        other().push(chunk);
        done();
      },
      final(done) {
        other().push(null);
        done();
      },
      read() {},
      destroy(error, done) {
        const peer = other();
        if (!peer.destroyed) peer.destroy();
        done(error);
      },
    });
  ends.push(
    make(() => ends[1] as Duplex),
    make(() => ends[0] as Duplex),
  );
  return [ends[0] as Duplex, ends[1] as Duplex];
}

/**
 * Serves a build's SSH agents on `call` until the coordinator ends it (the
 * build ended) or `call` fails. Resolves with undefined, or the error line.
 */
export async function serveSshForBuild(
  call: BidiCall<Request, ForwardSshResponse>,
  buildId: string,
  agents: AgentServer,
  onConnection?: (sshId: string, platform: string) => void,
): Promise<string | undefined> {
  const connections = new Map<bigint, Duplex>();
  const send = (request: Request): void => {
    void call.send(request).catch(() => undefined);
  };
  try {
    await call.send({ body: { case: 'hello', value: { buildId } } });
    for await (const message of call) {
      const body = message.body;
      if (body.case === 'opened') {
        const { connectionId, sshId } = body.value;
        const [ours, served] = duplexPair();
        connections.set(connectionId, ours);
        ours.on('data', (chunk: Buffer) => {
          for (let at = 0; at < chunk.length; at += MAX_CHUNK_BYTES)
            send({
              body: {
                case: 'data',
                value: { connectionId, data: chunk.subarray(at, at + MAX_CHUNK_BYTES) },
              },
            });
        });
        const closed = (error = ''): void => {
          if (!connections.delete(connectionId)) return;
          send({ body: { case: 'closed', value: { connectionId, error } } });
        };
        ours.on('end', () => closed());
        ours.on('error', (err) => closed(errorLine(err)));
        ours.on('close', () => closed());
        const platform = body.value.platform;
        onConnection?.(
          sshId,
          platform
            ? [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')
            : '',
        );
        agents.serve(sshId, served);
      } else if (body.case === 'data') {
        connections.get(body.value.connectionId)?.write(body.value.data);
      } else if (body.case === 'closed') {
        const connection = connections.get(body.value.connectionId);
        connections.delete(body.value.connectionId);
        connection?.end();
      }
    }
    return undefined;
  } catch (err) {
    return errorLine(err);
  } finally {
    for (const connection of connections.values()) connection.destroy();
    connections.clear();
  }
}

/**
 * Starts serving a build's SSH agents in the background; `say` gets one line
 * when forwarding ends early (the steps that still need it then fail with the
 * coordinator's message). stop() ends it and closes the agents.
 */
export function startSshRelay(
  call: BidiCall<Request, ForwardSshResponse>,
  buildId: string,
  agents: AgentServer,
  say: (line: string) => void,
): { stop(): void } {
  let stopped = false;
  void serveSshForBuild(call, buildId, agents).then((error) => {
    if (error !== undefined && !stopped) say(`SSH agent forwarding ended: ${error}`);
  });
  return {
    stop() {
      stopped = true;
      call.cancel();
      agents.close();
    },
  };
}
