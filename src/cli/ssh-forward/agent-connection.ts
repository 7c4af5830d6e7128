/**
 * One forwarded agent connection: ssh2's AgentProtocol (server role) reads
 * the requests behind a FrameGuard and writes the replies; list and sign go
 * to the id's sources, everything else is refused (read-only, as BuildKit's
 * readOnlyAgent). Ends when either side ends, errs, or asks too much at once.
 */
import { pipeline, type Duplex } from 'node:stream';
import { AgentProtocol, type AgentInboundRequest, type ParsedKey } from 'ssh2';
import type { Logger } from '../../log.js';
import { FrameGuard } from './frame-guard.js';
import { sameKey, type KeySource, type SignHash } from './key-source.js';

export interface ConnectionSettings {
  /** Requests in flight on one connection (an ssh client sends one at a time). */
  maxPendingRequests: number;
  log?: Logger | undefined;
}

export interface AgentConnection {
  /** Ends the connection now (idempotent). */
  close(): void;
  /** Resolves once the connection has ended, for whatever reason. */
  readonly ended: Promise<void>;
}

export function serveAgentConnection(
  stream: Duplex,
  sources: readonly KeySource[],
  settings: ConnectionSettings,
): AgentConnection {
  const guard = new FrameGuard();
  const protocol = new AgentProtocol(false);
  const log = settings.log;
  let pending = 0;
  let open = true;
  let markEnded: () => void = () => undefined;
  const ended = new Promise<void>((resolve) => (markEnded = resolve));

  const close = (reason?: string): void => {
    if (!open) return;
    open = false;
    if (reason) log?.debug({ reason }, 'forwarded ssh-agent connection ended');
    for (const s of [guard, protocol, stream]) {
      // Errors after the end are nobody's to handle (a Duplex.from reports destroy() as one).
      s.on('error', () => undefined);
      s.destroy();
    }
    markEnded();
  };

  pipeline(stream, guard, protocol, stream, (err) => close(err ? err.message : undefined));

  /** Runs `work` for a request and replies with its result, unless the connection is gone by then. */
  const answer = <T>(
    request: AgentInboundRequest,
    work: () => Promise<T>,
    reply: (result: T) => void,
  ): void => {
    if (++pending > settings.maxPendingRequests) {
      close(`more than ${settings.maxPendingRequests} requests in flight`);
      return;
    }
    work().then(
      (result) => {
        pending--;
        if (!open) return;
        try {
          reply(result);
        } catch (err) {
          // ssh2 refuses a reply it cannot encode: end this connection, not the CLI.
          close(`cannot reply: ${(err as Error).message}`);
        }
      },
      (err: Error) => {
        pending--;
        log?.debug({ err: err.message }, 'forwarded ssh-agent request refused');
        if (open) protocol.failureReply(request);
      },
    );
  };

  protocol.on('identities', (request: AgentInboundRequest) =>
    answer(
      request,
      () => identitiesOf(sources),
      (keys) => protocol.getIdentitiesReply(request, keys),
    ),
  );
  protocol.on(
    'sign',
    (
      request: AgentInboundRequest,
      publicKey: ParsedKey,
      data: Buffer,
      options: { hash?: SignHash },
    ) =>
      answer(
        request,
        () => signWith(sources, publicKey, data, options.hash),
        (signature) => protocol.signReply(request, signature),
      ),
  );

  return { close: () => close('closed'), ended };
}

/** Every source's keys, each key once; a source that fails is left out unless all fail. */
async function identitiesOf(sources: readonly KeySource[]): Promise<ParsedKey[]> {
  const listed = await Promise.allSettled(sources.map((source) => source.identities()));
  const keys: ParsedKey[] = [];
  for (const result of listed) {
    if (result.status === 'rejected') continue;
    for (const key of result.value) if (!keys.some((k) => sameKey(k, key))) keys.push(key);
  }
  const failed = listed.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed && listed.every((r) => r.status === 'rejected')) throw failed.reason as Error;
  return keys;
}

/** The signature from the first source that holds the key. */
async function signWith(
  sources: readonly KeySource[],
  publicKey: ParsedKey,
  data: Buffer,
  hash: SignHash | undefined,
): Promise<Buffer> {
  for (const source of sources) {
    const keys = await source.identities().catch(() => [] as ParsedKey[]);
    if (keys.some((key) => sameKey(key, publicKey))) {
      return source.sign(publicKey, data, hash).catch((err: Error) => {
        throw new Error(`${source.description}: ${err.message}`, { cause: err });
      });
    }
  }
  throw new Error('no source of this id holds the key');
}
