import { Command, Option } from 'commander';
import { addClientOptions, collect, typedFlags } from '../options.js';

/**
 * `braid farm add|ls|remove`: agents installed on hosts over SSH, and the
 * record of them kept on this machine (docs/configuration.md, farm.json).
 */
function addSshOptions(command: Command): Command {
  return command
    .option(
      '--ssh-key <file>',
      'private key to log in with (repeatable; env BRAID_SSH_KEY; default: ssh-agent, then ~/.ssh/id_*); passphrase in env BRAID_SSH_KEY_PASSPHRASE',
      collect,
    )
    .option(
      '--ssh-known-hosts <file>',
      "known_hosts that must list the host's key (env BRAID_SSH_KNOWN_HOSTS; default ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts)",
    )
    .option(
      '--ssh-connect-timeout-ms <ms>',
      'deadline of the SSH login (env BRAID_SSH_CONNECT_TIMEOUT_MS; default 20000)',
    )
    .option(
      '--farm-file <file>',
      'the record of installed hosts (env BRAID_FARM_FILE; default DATA/farm.json)',
    );
}

function outputOption(): Option {
  return new Option('--output <format>', 'output format').choices(['text', 'json']).default('text');
}

function addCommand(env: NodeJS.ProcessEnv): Command {
  return addSshOptions(addClientOptions(new Command('add')))
    .description(
      'install an agent on a host over SSH, start it (systemd, or supervised) and wait until it joins',
    )
    .argument('<ssh-url>', 'ssh://user@host[:port]')
    .option('--name <name>', "agent name, unique in the farm (default: the host's name)")
    .option('--labels <k=v,...>', 'agent labels (repeatable)', collect)
    .option(
      '--prefix <dir>',
      'install directory on the host (env BRAID_PREFIX; default /opt/braid)',
    )
    .option('--no-systemd', "run the agent under braid's supervisor even where systemd runs")
    .option(
      '--join-token <token>',
      "the agent's join token (env BRAID_JOIN_TOKEN; default: one made in --data-dir)",
    )
    .option(
      '--data-dir <dir>',
      "the coordinator's data dir, to make the join token in (env BRAID_DATA_DIR)",
    )
    .option(
      '--agent-setting <key=value>',
      'another braid agent setting, e.g. capacity=4 (repeatable)',
      collect,
    )
    .option(
      '--agent-tls-cert <file>',
      "the agent's client certificate, for a coordinator that requires mTLS (with --agent-tls-key)",
    )
    .option('--agent-tls-key <file>', 'its key; installed on the host with mode 0600')
    .option('--wait-ms <ms>', 'how long to wait for the agent to join (default 60000)')
    .option('--bundle <dir>', 'the agent bundle to install (default: dist/bundle of this braid)')
    .addOption(outputOption())
    .action(async (url: string, _flags: Record<string, unknown>, command: Command) => {
      const { runFarmAdd } = await import('./farm-run.js');
      await runFarmAdd(url, typedFlags(command), env);
    });
}

function lsCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('ls'))
    .alias('list')
    .description('list the installed hosts with their agents as the coordinator sees them')
    .option(
      '--farm-file <file>',
      'the record of installed hosts (env BRAID_FARM_FILE; default DATA/farm.json)',
    )
    .addOption(outputOption())
    .action(async (_flags: Record<string, unknown>, command: Command) => {
      const { runFarmList } = await import('./farm-run.js');
      await runFarmList(typedFlags(command), env);
    });
}

function removeCommand(env: NodeJS.ProcessEnv): Command {
  return addSshOptions(addClientOptions(new Command('remove')))
    .alias('rm')
    .description(
      'drain and stop an installed agent, remove its files and service, revoke its join token',
    )
    .argument('<name>', 'agent name (braid farm ls)')
    .option(
      '--data-dir <dir>',
      "the coordinator's data dir, to revoke the join token in (default: where add made it)",
    )
    .option(
      '--drain-timeout-ms <ms>',
      'how long running jobs may take before the agent is killed (default 120000)',
    )
    .option('--wait-ms <ms>', 'how long to wait for the coordinator to drop it (default 30000)')
    .option(
      '--forget',
      'when the host cannot be reached: revoke its token and drop it from the record anyway',
    )
    .addOption(outputOption())
    .action(async (name: string, _flags: Record<string, unknown>, command: Command) => {
      const { runFarmRemove } = await import('./farm-run.js');
      await runFarmRemove(name, typedFlags(command), env);
    });
}

export function farmCommand(env: NodeJS.ProcessEnv): Command {
  return new Command('farm')
    .description('install, list and remove agents on hosts over SSH')
    .addCommand(addCommand(env))
    .addCommand(lsCommand(env))
    .addCommand(removeCommand(env));
}
