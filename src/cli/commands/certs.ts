import { Command } from 'commander';

function initCommand(): Command {
  return new Command('init')
    .description(
      'make a CA, a server certificate for the coordinator and a client certificate (mTLS), with openssl',
    )
    .requiredOption('--dir <dir>', 'where to write the PEM files (created 0700 when new)')
    .option(
      '--hosts <list>',
      "names and IPs the coordinator is reached by: the server certificate's SANs (default localhost,127.0.0.1,::1)",
    )
    .option('--days <n>', 'validity of the server and client certificates (default 825)')
    .option('--force', 'replace files that exist')
    .action(async (flags: Record<string, unknown>) => {
      const { runCertsInit } = await import('./certs-run.js');
      await runCertsInit(flags);
    });
}

export function certsCommand(): Command {
  return new Command('certs')
    .description('TLS certificates for a small farm')
    .addCommand(initCommand());
}
