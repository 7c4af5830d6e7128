/**
 * What stands between a forwarded byte stream and ssh2's AgentProtocol:
 * the stream is cut into agent messages (uint32 length, then that many
 * bytes), a message over the cap or of length zero ends the connection, and
 * every message except a well-formed list or sign request is passed on as
 * its bare type byte. AgentProtocol answers those with SSH_AGENT_FAILURE in
 * order; it would otherwise buffer any claimed length and, for requests it
 * does not parse (add, remove, lock, extension), read their body as the
 * next messages.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** OpenSSH's ssh-agent refuses longer messages (AGENT_MAX_LEN). */
export const MAX_AGENT_MESSAGE_BYTES = 256 * 1024;

const REQUEST_IDENTITIES = 11;
const SIGN_REQUEST = 13;
/** Not a request type: AgentProtocol answers it with SSH_AGENT_FAILURE. */
const NOT_A_REQUEST = 0;

export class AgentMessageLengthError extends Error {
  constructor(readonly length: number) {
    super(
      length === 0
        ? 'an agent message of length 0'
        : `an agent message of ${length} bytes (the limit is ${MAX_AGENT_MESSAGE_BYTES})`,
    );
    this.name = 'AgentMessageLengthError';
  }
}

export class FrameGuard extends Transform {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  /** Length of the message being read; -1 while its length is not read yet. */
  private messageBytes = -1;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.messageBytes < 0) {
        if (this.buffered < 4) break;
        const length = this.consume(4).readUInt32BE(0);
        if (length === 0 || length > MAX_AGENT_MESSAGE_BYTES) {
          callback(new AgentMessageLengthError(length));
          return;
        }
        this.messageBytes = length;
      }
      if (this.buffered < this.messageBytes) break;
      const body = this.consume(this.messageBytes);
      this.messageBytes = -1;
      this.push(forwarded(body));
    }
    callback();
  }

  /** The next `count` buffered bytes; joins chunks only when a message is complete, so each byte is copied at most twice. */
  private consume(count: number): Buffer {
    const all =
      this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const taken = all.subarray(0, count);
    const rest = all.subarray(count);
    this.chunks.length = 0;
    if (rest.length > 0) this.chunks.push(rest);
    this.buffered = rest.length;
    return taken;
  }
}

/** The message AgentProtocol gets for `body`: itself when it is a well-formed read-only request, else a bare type. */
function forwarded(body: Buffer): Buffer {
  const type = body[0]!;
  const readOnly =
    (type === REQUEST_IDENTITIES && body.length === 1) ||
    (type === SIGN_REQUEST && isWellFormedSign(body));
  if (readOnly) return frame(body);
  return frame(
    Buffer.of(type === REQUEST_IDENTITIES || type === SIGN_REQUEST ? NOT_A_REQUEST : type),
  );
}

/** byte SSH_AGENTC_SIGN_REQUEST, string key_blob, string data, uint32 flags, and nothing after. */
function isWellFormedSign(body: Buffer): boolean {
  let offset = 1;
  for (let field = 0; field < 2; field++) {
    if (offset + 4 > body.length) return false;
    offset += 4 + body.readUInt32BE(offset);
  }
  return offset + 4 === body.length;
}

function frame(body: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}
