#!/usr/bin/env bash
# braid on one box: provisions the engine, QEMU and a loopback registry,
# builds braid, starts a coordinator, and shows what this build of braid can
# do today. Everything started here is stopped (by pid) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-env.sh >/dev/null
npm ci --no-audit --no-fund --loglevel=error >/dev/null
npm run --silent build

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# A loopback registry for the images braid will push.
reg_port="$(free_port)"
cat > "$work/registry.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$reg_port }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)

# The coordinator, on a free loopback port.
node bin/braid.js coordinator --listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/coordinator.out" 2>"$work/coordinator.log" &
pids+=($!)
for _ in $(seq 1 50); do grep -q '^listening' "$work/coordinator.out" 2>/dev/null && break; sleep 0.1; done
coordinator="$(awk '/^listening/{print $2}' "$work/coordinator.out")"
[ -n "$coordinator" ] || { cat "$work/coordinator.log" >&2; exit 1; }

echo "== braid version (client and coordinator over gRPC)"
node bin/braid.js version --coordinator "$coordinator"
echo
echo "== braid events (the coordinator's event log)"
node bin/braid.js events --coordinator "$coordinator"
echo
echo "== this box: engine and QEMU handlers the agent will offer"
echo "engine:     $(docker info --format '{{.OSType}}/{{.Architecture}} (Docker {{.ServerVersion}})')"
echo "emulation:  $(cd /proc/sys/fs/binfmt_misc && grep -l '^enabled' qemu-* 2>/dev/null | tr '\n' ' ')"
echo "registry:   127.0.0.1:$reg_port"
echo
echo "braid build (the farm: coordinator + agents building examples/hello for"
echo "linux/amd64, arm64, ppc64le and s390x) is not implemented yet; nothing was built."
