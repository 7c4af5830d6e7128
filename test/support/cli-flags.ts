/**
 * What the real `braid` binary accepts, read from its `--help` (commander's
 * own listing), and the `braid ...` invocations written in deploy files and
 * docs, so tests can check that every flag and BRAID_* variable used there
 * exists.
 */
import { braid } from './braid-cli.js';

export interface CommandHelp {
  /** `build`, `tokens create`. */
  readonly path: string;
  /** Long and short flags: `--tag`, `-t`, `--no-arch-check`. */
  readonly flags: ReadonlySet<string>;
  /** Subcommand names. */
  readonly commands: ReadonlySet<string>;
}

const helpCache = new Map<string, Promise<CommandHelp>>();

/** Parses `braid PATH... --help`; throws when the command does not exist. */
export function commandHelp(path: readonly string[]): Promise<CommandHelp> {
  const key = path.join(' ');
  let help = helpCache.get(key);
  if (!help) {
    help = (async () => {
      const result = await braid([...path, '--help']);
      if (result.code !== 0) {
        throw new Error(`braid ${key} --help exited ${result.code}: ${result.stderr.trim()}`);
      }
      const flags = new Set<string>();
      const commands = new Set<string>();
      let section = '';
      for (const line of result.stdout.split('\n')) {
        const heading = /^(\w[\w ]*):$/.exec(line);
        if (heading) {
          section = heading[1] ?? '';
          continue;
        }
        if (section === 'Options') {
          // "  -t, --tag <ref>   ..." or "  --no-cache   ..."; continuation lines are indented deeper.
          const option = /^ {2}(?:(-[A-Za-z]), )?(--[a-z0-9-]+)/.exec(line);
          if (option?.[1]) flags.add(option[1]);
          if (option?.[2]) flags.add(option[2]);
        } else if (section === 'Commands') {
          const command = /^ {2}([a-z][a-z0-9-]*)/.exec(line);
          if (command?.[1] && command[1] !== 'help') commands.add(command[1]);
        }
      }
      return { path: key, flags, commands };
    })();
    helpCache.set(key, help);
  }
  return help;
}

/** An invocation: the subcommand path and its flags, with where it was written. */
export interface Invocation {
  readonly where: string;
  /** Everything after `braid`, split into words. */
  readonly words: readonly string[];
}

/**
 * `braid ...` command lines in shell-like text (code blocks, unit files,
 * scripts, comments): continuation lines joined (also `\` + `# ` in
 * comments), each `braid` word read up to `;`, `|`, `&`, `)`, `#` or a
 * backquote. Only words that start with a top-level command count (see
 * resolveCommand): prose and `kubectl -n braid ...` are left alone.
 */
export function shellInvocations(text: string, where: string): Invocation[] {
  const joined = text.replace(/\\\n\s*(?:#\s*)?/g, ' ');
  const found: Invocation[] = [];
  for (const line of joined.split('\n')) {
    for (const match of line.matchAll(/(?:^|[\s"'`(=/])braid(?=\s)/g)) {
      const after = line.slice((match.index ?? 0) + match[0].length);
      const words = (after.split(/[;|&)#`]/)[0] ?? '').trim().split(/\s+/).filter(Boolean);
      if (words.length > 0) found.push({ where, words });
    }
  }
  return found;
}

/** The longest prefix of `words` that names a command, and that command's help. */
export async function resolveCommand(
  words: readonly string[],
): Promise<{ help: CommandHelp; rest: readonly string[] }> {
  let help = await commandHelp([]);
  let depth = 0;
  while (depth < words.length && help.commands.has(words[depth] ?? '')) {
    depth++;
    help = await commandHelp(words.slice(0, depth));
  }
  return { help, rest: words.slice(depth) };
}

/** Flags in `words` that `help` does not list (`--flag=value` counts as `--flag`). */
export function unknownFlags(help: CommandHelp, words: readonly string[]): string[] {
  return words
    .filter((w) => /^--?[A-Za-z]/.test(w))
    .map((w) => w.split('=')[0] ?? w)
    .filter((flag) => !help.flags.has(flag));
}

/** `BRAID_DRAIN_GRACE_MS` -> `--drain-grace-ms`; booleans may be negatable (`--no-arch-check`). */
export function flagOfVariable(name: string): string[] {
  const kebab = name
    .replace(/^BRAID_/, '')
    .toLowerCase()
    .replace(/_/g, '-');
  return [`--${kebab}`, `--no-${kebab}`];
}
