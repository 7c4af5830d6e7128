/**
 * An HTTP proxy on 127.0.0.1 in front of a test registry that injects
 * faults by rule: answer 5xx/429, or drop the connection, for requests that
 * match, a bounded number of times.
 */
import {
  createServer,
  request,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';

export interface FaultRule {
  /** Which requests: method and a path pattern. */
  method?: string;
  path: RegExp;
  /** What to do instead of forwarding. */
  fault: { status: number; retryAfterS?: number } | 'drop';
  /** How many matching requests get the fault (then they pass). */
  times: number;
}

export interface FaultProxy {
  readonly host: string;
  /** Faults injected so far, by rule index. */
  readonly injected: number[];
  readonly forwarded: { method: string; path: string; status: number }[];
  stop(): Promise<void>;
}

export async function startFaultProxy(target: string, rules: FaultRule[]): Promise<FaultProxy> {
  const [targetHost, targetPort] = target.split(':');
  const injected = rules.map(() => 0);
  const forwarded: { method: string; path: string; status: number }[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const index = rules.findIndex(
      (r, i) =>
        (r.method === undefined || r.method === req.method) &&
        r.path.test(path) &&
        (injected[i] ?? 0) < r.times,
    );
    const rule = rules[index];
    if (rule) {
      injected[index] = (injected[index] ?? 0) + 1;
      req.resume();
      if (rule.fault === 'drop') {
        req.socket.destroy();
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (rule.fault.retryAfterS !== undefined)
        headers['retry-after'] = String(rule.fault.retryAfterS);
      res.writeHead(rule.fault.status, headers);
      res.end(
        JSON.stringify({
          errors: [{ code: 'UNAVAILABLE', message: `injected fault ${rule.fault.status}` }],
        }),
      );
      return;
    }
    const upstream = request(
      {
        host: targetHost,
        port: Number(targetPort),
        method: req.method,
        path,
        headers: { ...req.headers, host: target },
      },
      (answer) => {
        forwarded.push({ method: req.method ?? '', path, status: answer.statusCode ?? 0 });
        // Locations point back through the proxy.
        const headers = { ...answer.headers };
        if (typeof headers.location === 'string')
          headers.location = headers.location.replace(`//${target}`, `//${hostOf()}`);
        res.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const hostOf = () => `127.0.0.1:${port}`;
  return {
    host: hostOf(),
    injected,
    forwarded,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
