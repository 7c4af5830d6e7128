import { describe, expect, it } from 'vitest';
import {
  binfmtReader,
  emulatedPlatforms,
  type BinfmtReader,
} from '../../src/agent/capabilities.js';
import { createEngine } from '../../src/agent/engine.js';
import { formatPlatform } from '../../src/oci/platform.js';

/** This host as a QEMU box: arm64 and s390x handlers enabled with the F flag. */
const thisHost: BinfmtReader = {
  list: async () => ['qemu-aarch64', 'qemu-s390x', 'status'],
  read: async () => 'enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n',
};
const amd64 = { os: 'linux', architecture: 'amd64' };

/** What an agent advertises: the engine's own reader when it has one, else this host's (agent.ts). */
async function advertised(url: string): Promise<string[]> {
  const engine = createEngine(url);
  try {
    const emulated = await emulatedPlatforms(amd64, engine.binfmt?.() ?? thisHost);
    return emulated.map((e) => formatPlatform(e.platform));
  } finally {
    await engine.close();
  }
}

describe("an engine's emulated platforms", () => {
  it("do not include this host's QEMU handlers when the engine is tcp:// on another host", async () => {
    expect(await advertised('tcp://10.0.0.7:2375')).toEqual([]);
    expect(await advertised('tcp://build-s390x.example:2375')).toEqual([]);
  });

  it("are this host's when the engine is tcp:// on loopback or a local socket", async () => {
    for (const url of ['tcp://127.0.0.1:2375', 'tcp://localhost:2375', 'tcp://[::1]:2375']) {
      expect(await advertised(url), url).toEqual(['linux/arm64', 'linux/s390x']);
    }
    expect(await advertised('unix:///var/run/docker.sock')).toEqual(['linux/arm64', 'linux/s390x']);
  });

  it('reads a directory that is not there as no handlers', async () => {
    expect(await emulatedPlatforms(amd64, binfmtReader('/nonexistent/binfmt_misc'))).toEqual([]);
  });
});
