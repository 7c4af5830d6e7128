/**
 * A job's SSH agent connections, as BuildKit's session asks for them: each
 * `RUN --mount=type=ssh` connection becomes one AgentService.ForwardSsh call
 * to the coordinator, which relays it to the client that submitted the build.
 */
import { Duplex } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type {
  AgentServiceForwardSshRequestSchema,
  AgentServiceForwardSshResponse,
  AssignJob,
} from '../gen/braid/v1/agent_pb.js';
import type { BidiCall, CallOptions } from '../rpc/client.js';
import type { SshForwarder } from './buildkit-session.js';

export type ForwardSshCall = (
  options?: CallOptions,
) => BidiCall<
  MessageInitShape<typeof AgentServiceForwardSshRequestSchema>,
  AgentServiceForwardSshResponse
>;

/** The forwarder of a job whose build forwards SSH agents; undefined when it forwards none. */
export function sshForwarderFor(
  forwardSsh: ForwardSshCall,
  job: Pick<AssignJob, 'jobId' | 'sshIds'>,
): SshForwarder | undefined {
  if (job.sshIds.length === 0) return undefined;
  return {
    ids: [...job.sshIds],
    async open(id, signal) {
      const call = forwardSsh({ signal });
      await call.send({ body: { case: 'open', value: { jobId: job.jobId, sshId: id } } });
      const connection = new Duplex({
        write(chunk: Buffer, _encoding, done) {
          call.send({ body: { case: 'data', value: chunk } }).then(() => done(), done);
        },
        final(done) {
          call.end();
          done();
        },
        read() {},
        destroy(error, done) {
          call.cancel();
          done(error);
        },
      });
      void (async () => {
        try {
          for await (const response of call) {
            if (connection.destroyed) return;
            connection.push(response.data);
          }
          connection.push(null);
        } catch (err) {
          connection.destroy(err as Error);
        }
      })();
      return connection;
    },
  };
}
