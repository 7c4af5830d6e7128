/**
 * The agent without systemd: PREFIX/run/supervise.sh, started detached
 * (setsid, nohup), runs the agent and restarts it with backoff, as
 * braid-agent.service would. Its pid is in PREFIX/run/supervisor.pid and
 * the agent's in PREFIX/run/agent.pid; SIGTERM to the supervisor drains the
 * agent and ends both.
 */
import type {
  AgentService,
  InstallPaths,
  ServiceFile,
  ServiceOptions,
  StopOutcome,
} from './agent-service.js';
import { FarmError } from './errors.js';
import { shellQuote, type RemoteHost } from './remote-host.js';

/** A live (not zombie) process whose command line holds `supervise.sh`. */
const ALIVE = `alive() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]
}`;

export function renderSupervisor(paths: InstallPaths, node: string): string {
  return `#!/bin/sh
# braid agent supervisor, written by braid farm add. It runs the agent and
# restarts it with backoff (1 s doubling to 60 s, reset after a minute up),
# as braid-agent.service does: no restart after exit 0 (drained) or 2
# (invalid settings), and none after 5 failures in a row. SIGTERM drains the
# agent (its own SIGTERM) and ends the supervisor once the agent is gone.
PREFIX=${shellQuote(paths.prefix)}
NODE=${shellQuote(node)}
RUN="$PREFIX/run"
LOG=${shellQuote(paths.log)}
echo "$$" > "$RUN/supervisor.pid"
agent=
stopping=
on_signal() {
  stopping=1
  if [ -n "$agent" ]; then kill -TERM "$agent" 2>/dev/null; fi
}
trap on_signal TERM INT HUP
note() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) braid farm supervisor: $*" >> "$LOG"; }
delay=1
failures=0
while [ -z "$stopping" ]; do
  if [ -f "$LOG" ] && [ "$(wc -c < "$LOG")" -gt 10485760 ]; then mv -f "$LOG" "$LOG.1"; fi
  started=$(date +%s)
  (set -a; . "$PREFIX/etc/agent.env"; set +a; exec "$NODE" "$PREFIX/lib/cli.mjs" agent) >> "$LOG" 2>&1 < /dev/null &
  agent=$!
  echo "$agent" > "$RUN/agent.pid"
  # A trapped signal ends wait early: wait again until the agent is gone.
  while :; do
    wait "$agent"
    code=$?
    kill -0 "$agent" 2>/dev/null || break
  done
  agent=
  rm -f "$RUN/agent.pid"
  [ -n "$stopping" ] && break
  case "$code" in
    0|2) note "agent exited $code; not restarting"; break ;;
  esac
  if [ $(($(date +%s) - started)) -ge 60 ]; then delay=1; failures=0; fi
  failures=$((failures + 1))
  if [ "$failures" -ge 5 ]; then note "agent exited $code, 5 failures in a row; giving up"; break; fi
  note "agent exited $code; restarting in $delay s"
  sleep "$delay" &
  sleeper=$!
  wait "$sleeper"
  kill "$sleeper" 2>/dev/null
  delay=$((delay * 2))
  [ "$delay" -gt 60 ] && delay=60
done
rm -f "$RUN/supervisor.pid" "$RUN/agent.pid"
`;
}

export class SupervisedService implements AgentService {
  readonly kind = 'supervised';
  private readonly script: string;
  private readonly pidFile: string;

  constructor(private readonly options: ServiceOptions) {
    this.script = `${options.paths.run}/supervise.sh`;
    this.pidFile = `${options.paths.run}/supervisor.pid`;
  }

  files(): ServiceFile[] {
    const { paths, node } = this.options;
    return [{ path: this.script, content: renderSupervisor(paths, node), mode: 0o700 }];
  }

  envExtra(): Record<string, string> {
    return { cacheDir: this.options.paths.cache, logFormat: 'json' };
  }

  /** Shell that sets $pid to the live supervisor's pid and $agent to the live agent's (or empty). */
  private findProcesses(): string {
    const { run } = this.options.paths;
    return `${ALIVE}
runs() { alive "$1" && tr '\\0' ' ' < "/proc/$1/cmdline" | grep -q "$2"; }
pid=$(cat ${shellQuote(this.pidFile)} 2>/dev/null)
runs "$pid" ${shellQuote(this.script)} || pid=
agent=$(cat ${shellQuote(`${run}/agent.pid`)} 2>/dev/null)
runs "$agent" ${shellQuote(this.options.paths.cli)} || agent=`;
  }

  async running(host: RemoteHost): Promise<boolean> {
    return (await host.run(`${this.findProcesses()}\n[ -n "$pid" ]`, 30_000)).code === 0;
  }

  async start(host: RemoteHost): Promise<void> {
    const { paths } = this.options;
    const pidFile = shellQuote(this.pidFile);
    await host.mustRun(
      'starting the agent supervisor',
      `mkdir -p ${shellQuote(paths.run)} ${shellQuote(paths.cache)} "$(dirname ${shellQuote(paths.log)})" || exit 1
rm -f ${pidFile}
cd /
setsid nohup sh ${shellQuote(this.script)} < /dev/null > /dev/null 2>&1 &
i=0
while [ "$i" -lt 100 ]; do
  [ -s ${pidFile} ] && exit 0
  sleep 0.1
  i=$((i + 1))
done
echo "the supervisor wrote no ${this.pidFile} within 10 s" >&2
exit 1`,
      30_000,
    );
  }

  async stop(host: RemoteHost, drainTimeoutMs: number): Promise<StopOutcome> {
    const tenths = Math.ceil(drainTimeoutMs / 100);
    // The supervisor forwards SIGTERM to the agent; an agent left without one gets it directly.
    const result = await host.run(
      `${this.findProcesses()}
if [ -n "$pid" ]; then kill -TERM "$pid"; elif [ -n "$agent" ]; then kill -TERM "$agent"; fi
i=0
while [ "$i" -lt ${tenths} ]; do
  alive "$pid" || alive "$agent" || exit 0
  sleep 0.1
  i=$((i + 1))
done
kill -KILL $agent $pid 2>/dev/null
exit 3`,
      drainTimeoutMs + 30_000,
    );
    if (result.code !== 0 && result.code !== 3) {
      throw new FarmError(
        'failed_precondition',
        host.display,
        `stopping the agent supervisor failed: ${result.stderr.trim() || `exit ${result.code}`}`,
      );
    }
    return { drained: result.code === 0 };
  }

  async uninstall(): Promise<void> {
    // Everything it has is under the prefix, which the caller removes.
  }

  async logTail(host: RemoteHost, lines: number): Promise<string> {
    return (await host.run(`tail -n ${lines} ${shellQuote(this.options.paths.log)}`, 30_000))
      .stdout;
  }
}
