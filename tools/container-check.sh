#!/usr/bin/env bash
# Proves the container here, without a registry: builds a Debian 12 base image from Debian's
# packages (mmdebstrap, imported into podman), builds the CPU variant of the Dockerfile on it,
# starts it, waits for health SERVING through the image's HEALTHCHECK, runs a Generate and a
# RunWithCache against it with lensctl from the host, checks the non-root user and the bundled
# libraries, then sends SIGTERM (drain, exit 0). Every step is logged; the summary prints last.
#   tools/container-check.sh            (as root, or with sudo; needs build/client/lensctl)
# Port 50051 (and 9464) on the host must be free: the container shares the host's network.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
BASE=localhost/lensd-base:debian12
IMAGE=localhost/lensd:cpu
NAME=lensd-check
LOG=$(mktemp -d)/container-check
mkdir -p "$LOG"
pm() { $SUDO podman --runtime runc --cgroup-manager cgroupfs "$@"; }
declare -a RESULTS=()
FAILED=0

step() {  # step NAME TIMEOUT_S COMMAND...: runs, logs to $LOG/NAME.log, records PASS/FAIL
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name"
  # timeout runs programs, not functions: the step runs in a child bash that has them exported.
  if timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$LOG/$name.log" 2>&1; then
    RESULTS+=("PASS  $name ($((SECONDS - start)) s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - start)) s): $(tail -n 3 "$LOG/$name.log" | tr '\n' ' ')")
    FAILED=1
  fi
}

summary() {
  pm rm -f "$NAME" >/dev/null 2>&1
  echo
  echo "== container-check summary (logs: $LOG)"
  printf '%s\n' "${RESULTS[@]}"
  [ "$FAILED" = 0 ] && echo "container-check: PASS" || echo "container-check: FAIL"
}
trap summary EXIT

install_tools() {
  local missing=()
  for p in podman runc mmdebstrap uidmap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # Containers inside this VM cannot raise ulimits: podman must not try.
  if ! grep -qs '^default_ulimits *= *\[\]' /etc/containers/containers.conf; then
    $SUDO mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' | $SUDO tee -a /etc/containers/containers.conf
  fi
}

base_image() {
  if pm image exists "$BASE"; then echo "$BASE exists"; return 0; fi
  local tar
  tar=$(mktemp --suffix=.tar)
  $SUDO mmdebstrap --variant=minbase --include=ca-certificates bookworm "$tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" &&
    pm import "$tar" "$BASE"
  local rc=$?
  rm -f "$tar"
  return $rc
}

build_image() {
  pm build --format docker --network host \
    --build-arg BUILD_IMAGE="$BASE" --build-arg RUNTIME_IMAGE="$BASE" \
    --build-arg LENSD_CUDA=OFF -t "$IMAGE" "$ROOT"
}

start() {
  pm rm -f "$NAME" >/dev/null 2>&1
  pm run -d --name "$NAME" --network host "$IMAGE"
}

wait_healthy() {  # through the image's own HEALTHCHECK command
  for _ in $(seq 120); do
    if pm healthcheck run "$NAME"; then
      pm inspect --format '{{.State.Health.Status}}' "$NAME"
      return 0
    fi
    sleep 1
  done
  pm logs "$NAME"
  return 1
}

generate() {
  local out
  out=$("$ROOT/build/client/lensctl" --addr 127.0.0.1:50051 generate --prompt "hello" \
        --max-new-tokens 8 --ignore-eos) || return 1
  echo "$out"
  [ "$(echo "$out" | head -1 | wc -w)" = 8 ]
}

run_with_cache() {
  local out
  out=$(mktemp --suffix=.safetensors)
  "$ROOT/build/client/lensctl" --addr 127.0.0.1:50051 cache --prompt "hello" \
    --hooks 'blocks.0.*' --out "$out" || return 1
  ls -l "$out"
  # The header names the captured tensors and the logits.
  head -c 4096 "$out" | grep -a -q '"logits"' && head -c 4096 "$out" | grep -a -q 'blocks.0.hook_resid_pre'
}

non_root() {
  local uid
  uid=$(pm exec "$NAME" sh -c 'id -u 2>/dev/null || awk "/^Uid:/ {print \$2}" /proc/self/status')
  echo "uid in the container: $uid; lensd runs as: $(pm top "$NAME" user comm | tail -n +2)"
  [ "$uid" = 10001 ] && ! pm top "$NAME" user comm | tail -n +2 | grep -q root
}

bundled_libraries() {
  local missing
  missing=$(pm exec "$NAME" sh -c \
    'for f in /opt/lensd/bin/*; do ldd "$f" | grep "not found" | sed "s|^|$f: |"; done')
  pm exec "$NAME" sh -c 'ls /opt/lensd/lib; ldd /opt/lensd/bin/lensd | grep grpc'
  [ -z "$missing" ] || { echo "missing: $missing"; return 1; }
  pm exec "$NAME" sh -c 'ldd /opt/lensd/bin/lensd | grep -q "libgrpc++.*/opt/lensd/lib"'
}

drain() {  # SIGTERM: lensd drains and exits 0
  pm stop --time 60 "$NAME" || return 1
  local code
  code=$(pm inspect --format '{{.State.ExitCode}}' "$NAME")
  pm logs "$NAME" 2>&1 | tail -n 5
  echo "exit code: $code"
  [ "$code" = 0 ]
}

export ROOT SUDO BASE IMAGE NAME
export -f pm install_tools base_image build_image start wait_healthy generate run_with_cache \
  non_root bundled_libraries drain
[ -x build/client/lensctl ] || bash tools/build.sh
step install-tools 900 install_tools
step base-image 1800 base_image
step build-image 5400 build_image
step start 120 start
step health 180 wait_healthy
step generate 120 generate
step run-with-cache 120 run_with_cache
step non-root 60 non_root
step bundled-libraries 60 bundled_libraries
step drain 120 drain
[ "$FAILED" = 0 ]
