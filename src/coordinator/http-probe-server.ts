/** The coordinator's /metrics, /healthz and /readyz: the shared probe server. */
export {
  probeAnswer,
  startProbeServer,
  type ProbeServer,
  type ProbeServerOptions,
  type Readiness,
} from '../rpc/http-probe-server.js';
