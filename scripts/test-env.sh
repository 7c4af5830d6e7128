#!/usr/bin/env bash
# Provision the real components braid's tests and quick start need on a Debian
# machine: Docker engine, registry, QEMU binfmt handlers, skopeo, sshd,
# PostgreSQL (each suite starts its own cluster), and the per-architecture
# busybox-static packages the test base image is built from.
# Idempotent: safe to run again; it only installs or starts what is missing.
set -euo pipefail

log() { printf 'test-env: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (apt-get, dockerd, binfmt_misc)"; exit 1
fi

STATE_DIR="${BRAID_TEST_ENV_DIR:-/var/lib/braid-test-env}"
mkdir -p "$STATE_DIR"

PACKAGES=(docker.io docker-registry qemu-user-static binfmt-support skopeo openssh-server openssh-client iproute2 ca-certificates openssl curl systemd gcc libc6-dev bsdutils postgresql)
FOREIGN_ARCHES=(arm64 armhf ppc64el s390x)

apt_retry() {
  local i
  for i in 1 2 3 4; do
    if "$@"; then return 0; fi
    [ "$i" = 4 ] && break
    log "'$*' failed (attempt $i); retrying in $((i * 4)) s"
    sleep $((i * 4))
  done
  log "'$*' failed 4 times"; return 1
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

# --- Debian packages --------------------------------------------------------
added_arch=0
for a in "${FOREIGN_ARCHES[@]}"; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    dpkg --add-architecture "$a"; added_arch=1
  fi
done

mapfile -t missing < <(missing_packages)
busybox_dir="$STATE_DIR/busybox"
need_busybox=0
for a in amd64 "${FOREIGN_ARCHES[@]}"; do
  ls "$busybox_dir"/busybox-static_*_"$a".deb >/dev/null 2>&1 || need_busybox=1
done

if [ "${#missing[@]}" -gt 0 ] || [ "$need_busybox" = 1 ] || [ "$added_arch" = 1 ]; then
  log "apt-get update"
  # A mirror mid-sync fails single index files; after the retries, go on with
  # the lists that did arrive: the install below is what must succeed.
  apt_retry apt-get update -q -o Acquire::Retries=3 || log "warning: apt-get update stayed incomplete; using the lists it fetched"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  # The tests start their own PostgreSQL clusters (test/support/postgres.ts):
  # the package need not create and start a 'main' one on port 5432.
  mkdir -p /etc/postgresql-common/createcluster.d
  [ -e /etc/postgresql-common/createcluster.d/braid-test-env.conf ] ||
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/braid-test-env.conf
  log "installing: ${missing[*]}"
  apt_retry apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 "${missing[@]}"
fi

# --- busybox-static for every test architecture -----------------------------
if [ "$need_busybox" = 1 ]; then
  mkdir -p "$busybox_dir"
  for a in amd64 "${FOREIGN_ARCHES[@]}"; do
    if ! ls "$busybox_dir"/busybox-static_*_"$a".deb >/dev/null 2>&1; then
      log "downloading busybox-static:$a"
      (cd "$busybox_dir" && apt_retry apt-get download -q "busybox-static:$a")
    fi
  done
fi
for a in amd64 "${FOREIGN_ARCHES[@]}"; do
  out="$busybox_dir/$a/busybox"
  if [ ! -x "$out" ]; then
    tmp="$(mktemp -d)"
    dpkg-deb -x "$busybox_dir"/busybox-static_*_"$a".deb "$tmp"
    mkdir -p "$busybox_dir/$a"
    install -m 0755 "$tmp/bin/busybox" "$out"
    rm -rf "$tmp"
  fi
done

# --- PostgreSQL (server binaries; the tests run initdb and pg_ctl themselves) ---
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
  log "PostgreSQL's initdb and pg_ctl are missing under /usr/lib/postgresql/*/bin; check the postgresql package"; exit 1
fi
id -u postgres >/dev/null 2>&1 || { log "the postgres user is missing (the postgresql package creates it)"; exit 1; }

# --- QEMU binfmt handlers ----------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  log "mounting binfmt_misc"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable >/dev/null 2>&1 || true
for q in qemu-aarch64 qemu-arm qemu-ppc64le qemu-s390x; do
  f="/proc/sys/fs/binfmt_misc/$q"
  if [ ! -e "$f" ]; then
    update-binfmts --enable "$q" || true
  fi
  if [ ! -e "$f" ] || ! grep -q '^enabled' "$f"; then
    log "QEMU handler $q is not registered; check qemu-user-static and binfmt-support"; exit 1
  fi
  grep -q '^flags: .*F' "$f" || log "warning: $q is registered without the F flag; builds inside containers may fail"
done

# --- Docker engine -------------------------------------------------------------
engine_up() { timeout 5 curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }
if ! command -v curl >/dev/null; then apt_retry apt-get install -y -q --no-install-recommends curl; fi
if ! engine_up; then
  log "starting dockerd (--bridge=none --iptables=false --ip-forward=false)"
  # setsid: the engine outlives this script and the CI shell that called it.
  setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip-forward=false \
    >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$STATE_DIR/dockerd.pid"
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 1
  done
  if ! engine_up; then
    log "dockerd did not answer on /var/run/docker.sock within 60 s; see $STATE_DIR/dockerd.log"
    tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
    exit 1
  fi
fi

log "ready: engine $(curl -sf --unix-socket /var/run/docker.sock http://localhost/version | sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' | head -c 20), registry $(command -v docker-registry), skopeo $(skopeo --version | awk '{print $3}'), PostgreSQL in $pg_bin, busybox in $busybox_dir"
echo "BRAID_BUSYBOX_DIR=$busybox_dir"
