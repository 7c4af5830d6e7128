/**
 * A TCP proxy on 127.0.0.1 in front of a loopback server: optional added
 * latency, and a cut that drops every connection while both ends stay alive
 * (a network failure, not a process death).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  /** Drop every open connection and refuse new ones until resume(). */
  cut(): void;
  resume(): void;
  stop(): Promise<void>;
}

export async function startTcpProxy(
  target: { host: string; port: number } | { path: string },
  options: { rttMs?: number; port?: number } = {},
): Promise<TcpProxy> {
  const half = (options.rttMs ?? 0) / 2;
  const sockets = new Set<Socket>();
  let cut = false;
  const relay = (from: Socket, to: Socket) => {
    const forward = (chunk: Buffer) =>
      half > 0 ? setTimeout(() => to.write(chunk), half) : to.write(chunk);
    from.on('data', forward);
    from.on('end', () => (half > 0 ? setTimeout(() => to.end(), half) : to.end()));
    from.on('error', () => to.destroy());
    // Closing waits behind the delayed data, so nothing in flight is lost.
    from.on('close', () => (half > 0 ? setTimeout(() => to.destroy(), half + 1) : to.destroy()));
  };
  const server: Server = createServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const upstream = 'path' in target ? connect(target.path) : connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const dropAll = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    host: `127.0.0.1:${port}`,
    port,
    cut: () => {
      cut = true;
      dropAll();
    },
    resume: () => {
      cut = false;
    },
    stop: () => {
      dropAll();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
