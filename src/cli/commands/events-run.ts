import { timestampDate } from '@bufbuild/protobuf/wkt';
import { clientSettings } from '../../config/settings.js';
import { EventKind, Severity, SystemService, type Event } from '../../gen/braid/v1/system_pb.js';
import { coordinatorClient } from '../client.js';
import { UsageError } from '../../errors.js';
import { compile } from '../compile.js';
import { enumName, parseEnumName } from '../progress/names.js';

/** `agent-connected` <-> EventKind.AGENT_CONNECTED */
const kindName = (kind: EventKind): string => enumName(EventKind, kind);
const parseKind = (text: string): EventKind =>
  parseEnumName<EventKind>(EventKind, text, text, 'event kind');

function eventLine(event: Event): string {
  const time = event.time ? timestampDate(event.time).toISOString() : '-';
  const fields = [
    event.buildId && `build=${event.buildId}`,
    event.platform && `platform=${event.platform}`,
    event.agent && `agent=${event.agent}`,
  ].filter(Boolean);
  const severity = (Severity[event.severity] ?? 'INFO').toLowerCase();
  return `${event.sequence} ${time} ${severity} ${kindName(event.kind)} ${event.message}${fields.length ? ` ${fields.join(' ')}` : ''}`;
}

export async function runEvents(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { after, follow, kind, output, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  if (!/^\d+$/.test(String(after))) {
    throw new UsageError(`--after "${String(after)}": expected a sequence number`);
  }
  const kinds = ((kind as string[] | undefined) ?? []).map(parseKind);
  const client = coordinatorClient(SystemService, config);
  const interrupt = new AbortController();
  process.once('SIGINT', () => interrupt.abort());
  try {
    const stream = client.events(
      { afterSequence: BigInt(String(after)), follow: Boolean(follow), kinds },
      { signal: interrupt.signal, timeoutMs: follow ? undefined : config.timeoutMs },
    );
    for await (const { event } of stream) {
      if (!event) continue;
      process.stdout.write(
        output === 'json'
          ? `${JSON.stringify({
              sequence: event.sequence.toString(),
              time: event.time ? timestampDate(event.time).toISOString() : null,
              kind: kindName(event.kind),
              severity: (Severity[event.severity] ?? '').toLowerCase(),
              message: event.message,
              buildId: event.buildId || undefined,
              platform: event.platform || undefined,
              agent: event.agent || undefined,
            })}\n`
          : `${eventLine(event)}\n`,
      );
    }
  } finally {
    client.close();
  }
}
