/**
 * Connection errors that tell the user which TLS setting to change name it
 * as the user gave it: `BRAID_TLS_CA` from the environment, `tlsCa` in the
 * config file, or the flag. The transport layer (src/rpc/status.ts) only
 * knows the flags; the CLI knows where each setting came from.
 */
import { RpcError } from '../errors.js';
import { flagName, settingOrigin, type SettingOrigin } from '../config/loader.js';

const TLS_KEYS = ['tlsCa', 'tlsCert', 'tlsKey'] as const;

/** A TLS setting that is set, and where it came from. */
export interface GivenTlsSetting {
  /** The setting's flag (`--tls-ca`): how src/rpc/status.ts names it. */
  flag: string;
  origin: SettingOrigin;
}

/** The TLS settings of a compiled client config that are set, with their origins. */
export function givenTlsSettings(
  config: Readonly<Partial<Record<(typeof TLS_KEYS)[number], string | undefined>>>,
): GivenTlsSetting[] {
  return TLS_KEYS.filter((key) => config[key] !== undefined).map((key) => ({
    flag: flagName(key),
    origin: settingOrigin(config, key) ?? { kind: 'flag', name: flagName(key) },
  }));
}

/** status.ts's advice when a TLS client meets a plaintext coordinator. */
const DROP_TLS = /on loopback, drop the --tls-\* flags; elsewhere --insecure allows plaintext/;
const TLS_FLAG = /--tls-(?:ca|cert|key)\b/g;

/**
 * `message` with its TLS advice naming the settings in `given` as the user
 * gave them; flags stay as they are, since they are what the user typed.
 * `secure` says whether the client dialled TLS (by a setting or by default).
 */
export function nameTlsSettings(
  message: string,
  given: readonly GivenTlsSetting[],
  secure: boolean,
): string {
  let named = message;
  if (secure && DROP_TLS.test(named)) {
    const advice =
      given.length === 0
        ? // Nothing was set: TLS came from the coordinator being off this machine.
          'braid dials TLS to a coordinator off this machine by default; --insecure allows plaintext'
        : undoAdvice(given);
    if (advice !== undefined) named = named.replace(DROP_TLS, advice);
  }
  return named.replace(TLS_FLAG, (flag) => {
    const origin = given.find((setting) => setting.flag === flag)?.origin;
    if (origin?.kind === 'env') return origin.name;
    if (origin?.kind === 'file') return `${origin.key} in ${origin.file}`;
    return flag;
  });
}

/**
 * "on loopback, unset BRAID_TLS_CA, remove tlsCert and tlsKey from FILE;
 * elsewhere ..."; undefined when every setting came from a flag, which the
 * generic advice already names.
 */
function undoAdvice(given: readonly GivenTlsSetting[]): string | undefined {
  const variables: string[] = [];
  const flags: string[] = [];
  const fileKeys: string[] = [];
  let file = '';
  for (const { origin } of given) {
    if (origin.kind === 'env') variables.push(origin.name);
    else if (origin.kind === 'file') {
      fileKeys.push(origin.key);
      file = origin.file;
    } else flags.push(origin.name);
  }
  if (variables.length === 0 && fileKeys.length === 0) return undefined;
  const steps = [
    variables.length > 0 ? `unset ${list(variables)}` : '',
    flags.length > 0 ? `drop ${list(flags)}` : '',
    fileKeys.length > 0 ? `remove ${list(fileKeys)} from ${file}` : '',
  ];
  return `on loopback, ${steps.filter(Boolean).join(', ')}; elsewhere --insecure allows plaintext`;
}

function list(items: readonly string[]): string {
  return items.length <= 1
    ? (items[0] ?? '')
    : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** An RpcError from a coordinator call with its TLS advice reworded; other errors as they are. */
export function withTlsSettingsNamed(
  err: unknown,
  given: readonly GivenTlsSetting[],
  secure: boolean,
): unknown {
  if (!(err instanceof RpcError) || err.code !== 'unavailable') return err;
  const message = nameTlsSettings(err.message, given, secure);
  return message === err.message
    ? err
    : new RpcError(err.code, err.operation, err.target, message, { cause: err.cause });
}
