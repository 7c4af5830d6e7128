#!/usr/bin/env bash
# braid on one box: provisions the engine, QEMU and a loopback registry,
# runs `braid serve` (a coordinator and a local agent), builds examples/hello
# for linux/amd64, arm64, ppc64le and s390x into the registry, prints the
# index and runs each platform's image. Everything started here is stopped
# (by pid) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-env.sh >/dev/null
npm ci --no-audit --no-fund --loglevel=error >/dev/null
npm run --silent build

work="$(mktemp -d)"
pids=()
images=()
cleanup() {
  for image in "${images[@]}"; do docker image rm --force "$image" >/dev/null 2>&1 || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_for() { for _ in $(seq 1 100); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done; cat "$3" >&2; return 1; }

# A loopback registry for the images braid pushes.
port="$(free_port)"
registry="127.0.0.1:$port"
cat > "$work/registry.yml" <<YAML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry }, delete: { enabled: true } }
http: { addr: $registry }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf "http://$registry/v2/" >/dev/null && break; sleep 0.1; done

# The base image every platform builds FROM (no public registry is reachable).
echo "== base image: busybox for 5 platforms, from Debian's busybox-static"
npx tsx scripts/push-base-image.ts "$registry" braid/busybox latest

# One-box farm: coordinator + local agent (native amd64, QEMU for the rest).
node bin/braid.js serve --listen 127.0.0.1:0 --data-dir "$work/data" --cache-dir "$work/cache" \
  --build-network none --log-format json >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
wait_for '^listening' "$work/serve.out" "$work/serve.log"
coordinator="$(awk '/^listening/{print $2}' "$work/serve.out")"
for _ in $(seq 1 50); do node bin/braid.js agents --coordinator "$coordinator" 2>/dev/null | grep -q '^local ' && break; sleep 0.2; done

echo
echo "== braid agents"
node bin/braid.js agents --coordinator "$coordinator"

image="$registry/braid/hello:latest"
echo
echo "== braid build examples/hello for 4 platforms"
node bin/braid.js build examples/hello -t "$image" \
  --platform linux/amd64,linux/arm64,linux/ppc64le,linux/s390x \
  --build-arg "BASE=$registry/braid/busybox:latest" \
  --metadata-file "$work/metadata.json" --coordinator "$coordinator"

echo
echo "== braid manifest inspect $image"
node bin/braid.js manifest inspect "$image"

echo
echo "== each platform's image, pulled and run by the engine"
images+=("$image")
for platform in linux/amd64 linux/arm64 linux/ppc64le linux/s390x; do
  docker pull --quiet --platform "$platform" "$image" >/dev/null
  images+=("$(docker image inspect --format '{{.Id}}' "$image")")
  printf '%-14s %s\n' "$platform" "$(docker run --rm --network none --platform "$platform" "$image" | tr '\n' ' ')"
done
