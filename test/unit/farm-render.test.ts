import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/cli/farm/agent-bundle.js';
import {
  agentEnvVars,
  checkAgentEnv,
  parseAgentSettings,
  readAgentEnvValue,
  renderAgentEnv,
  type AgentEnvInput,
} from '../../src/cli/farm/agent-env.js';
import { installPaths } from '../../src/cli/farm/agent-service.js';
import { nodeVersionOk } from '../../src/cli/farm/host-check.js';
import { shellQuote } from '../../src/cli/farm/remote-host.js';
import { renderSupervisor } from '../../src/cli/farm/supervised-service.js';
import { renderAgentUnit } from '../../src/cli/farm/systemd-unit.js';

/** `Section.Key=Value` lines of a unit file, comments and blank lines dropped. */
function directives(unit: string, dropped: readonly string[]): string[] {
  let section = '';
  const out: string[] = [];
  for (const raw of unit.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      section = line;
      continue;
    }
    const key = line.slice(0, line.indexOf('='));
    if (!dropped.includes(key)) out.push(`${section}${line}`);
  }
  return out;
}

const TOKEN = `braid_join_${'a'.repeat(52)}`;

function envInput(overrides: Partial<AgentEnvInput> = {}): AgentEnvInput {
  return {
    coordinator: 'build.example:7465',
    name: 'arm64-01',
    labels: ['rack=r2', 'ssd=true'],
    joinToken: TOKEN,
    tlsCa: '/opt/braid/etc/tls-ca.pem',
    tlsClient: undefined,
    insecure: false,
    extra: {},
    settings: {},
    ...overrides,
  };
}

describe('what braid farm add writes on a host', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('renders braid-agent.service with every setting of deploy/systemd/braid-agent.service', async () => {
    const deployed = await readFile(
      new URL('../../deploy/systemd/braid-agent.service', import.meta.url),
      'utf8',
    );
    const rendered = renderAgentUnit({
      node: '/usr/bin/node',
      cli: '/opt/braid/lib/cli.mjs',
      envFile: '/opt/braid/etc/agent.env',
    });
    const paths = ['ExecStart', 'EnvironmentFile', 'Documentation'];
    expect(directives(rendered, paths)).toEqual(directives(deployed, paths));
    expect(rendered).toContain('\nExecStart=/usr/bin/node /opt/braid/lib/cli.mjs agent\n');
    expect(rendered).toContain('\nEnvironmentFile=/opt/braid/etc/agent.env\n');
  });

  it('writes the agent env as quoted BRAID_* lines in a fixed order, and reads the token back', () => {
    const vars = agentEnvVars(
      envInput({ extra: { cacheDir: '/opt/braid/cache' }, settings: { capacity: '4' } }),
    );
    const text = renderAgentEnv(vars);
    expect(text.split('\n').filter((line) => !line.startsWith('#'))).toEqual([
      "BRAID_COORDINATOR='build.example:7465'",
      "BRAID_NAME='arm64-01'",
      "BRAID_LABELS='rack=r2,ssd=true'",
      `BRAID_JOIN_TOKEN='${TOKEN}'`,
      "BRAID_TLS_CA='/opt/braid/etc/tls-ca.pem'",
      "BRAID_CACHE_DIR='/opt/braid/cache'",
      "BRAID_CAPACITY='4'",
      '',
    ]);
    expect(renderAgentEnv(agentEnvVars(envInput()))).toBe(renderAgentEnv(agentEnvVars(envInput())));
    expect(readAgentEnvValue(text, 'BRAID_JOIN_TOKEN')).toBe(TOKEN);
    expect(readAgentEnvValue(text, 'BRAID_ENGINE')).toBeUndefined();
    expect(() => checkAgentEnv(vars)).not.toThrow();
  });

  it('names the client certificate and key for an mTLS coordinator, which --agent-setting cannot', () => {
    const vars = agentEnvVars(
      envInput({
        tlsClient: { cert: '/opt/braid/etc/tls-cert.pem', key: '/opt/braid/etc/tls-key.pem' },
      }),
    );
    expect(vars).toContainEqual(['BRAID_TLS_CERT', '/opt/braid/etc/tls-cert.pem']);
    expect(vars).toContainEqual(['BRAID_TLS_KEY', '/opt/braid/etc/tls-key.pem']);
    expect(() => checkAgentEnv(vars)).not.toThrow();
    expect(() => parseAgentSettings(['tls-cert=/elsewhere.pem'])).toThrow(
      /^--agent-setting "tls-cert=\/elsewhere\.pem": expected KEY=VALUE with KEY a braid agent setting/,
    );
  });

  it('lets --agent-setting coordinator= name the address the host reaches the coordinator at', () => {
    const vars = agentEnvVars(envInput({ settings: { coordinator: '10.0.0.5:7465' } }));
    expect(vars.filter(([name]) => name === 'BRAID_COORDINATOR')).toEqual([
      ['BRAID_COORDINATOR', '10.0.0.5:7465'],
    ]);
  });

  it('refuses settings the agent would refuse, naming the variable', () => {
    expect(() => checkAgentEnv(agentEnvVars(envInput({ labels: ["team=it's"] })))).toThrow(
      /^BRAID_LABELS: "team=it's" holds a quote/,
    );
    expect(() => checkAgentEnv(agentEnvVars(envInput({ labels: ['no-equals'] })))).toThrow(
      /BRAID_LABELS: label "no-equals" is not KEY=VALUE/,
    );
    expect(() => checkAgentEnv(agentEnvVars(envInput({ settings: { capacity: '500' } })))).toThrow(
      /BRAID_CAPACITY: must be at most 64/,
    );
  });

  it('takes --agent-setting by flag or camelCase name, and refuses unknown keys and its own flags', () => {
    expect(
      parseAgentSettings(['build-network=none', 'drainGraceMs=5000', 'engine=unix:///x']),
    ).toEqual({
      buildNetwork: 'none',
      drainGraceMs: '5000',
      engine: 'unix:///x',
    });
    expect(() => parseAgentSettings(['bogus=1'])).toThrow(
      /--agent-setting "bogus=1": expected KEY=VALUE/,
    );
    expect(() => parseAgentSettings(['name=x'])).toThrow(/--agent-setting "name=x"/);
    expect(() => parseAgentSettings(['capacity'])).toThrow(/--agent-setting "capacity"/);
  });

  it('wants Node.js 20.11 or newer on the host', () => {
    expect(['20.11.0', '20.20.2', '22.1.0'].map(nodeVersionOk)).toEqual([true, true, true]);
    expect(['20.10.9', '18.19.0', '', 'v20'].map(nodeVersionOk)).toEqual([
      false,
      false,
      false,
      false,
    ]);
  });

  it('quotes every value it puts in a shell command', () => {
    expect(shellQuote("it's here")).toBe(`'it'\\''s here'`);
    const script = renderSupervisor(installPaths('/opt/braid farm'), '/usr/bin/node');
    expect(script).toContain("PREFIX='/opt/braid farm'");
    expect(script).toContain("LOG='/opt/braid farm/log/agent.log'");
  });

  it('packs the same bundle into the same bytes, without source maps', async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-bundle-'));
    await mkdir(join(dir, 'chunks'));
    await writeFile(join(dir, 'braid.mjs'), 'export const main = () => {};\n');
    await writeFile(join(dir, 'braid.mjs.map'), '{}');
    await writeFile(join(dir, 'cli.mjs'), "import './braid.mjs';\n");
    await writeFile(join(dir, 'chunks', 'a.mjs'), 'export {};\n');
    await writeFile(join(dir, 'package.json'), '{"version":"9.9.9"}\n');
    const first = await packBundle(dir);
    const second = await packBundle(dir);
    expect(first.sha256).toBe(second.sha256);
    expect(first.version).toBe('9.9.9');
    const tar = gunzipSync(first.archive);
    expect(tar.includes(Buffer.from('chunks/a.mjs'))).toBe(true);
    expect(tar.includes(Buffer.from('braid.mjs.map'))).toBe(false);

    await writeFile(join(dir, 'chunks', 'a.mjs'), 'export const changed = 1;\n');
    expect((await packBundle(dir)).sha256).not.toBe(first.sha256);
  });
});
