#!/usr/bin/env bash
# Installs every build and test dependency of lensd from Debian 12 packages.
# Idempotent: packages already present are skipped by apt; safe to run on every build.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto
  libabsl-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev prometheus-cpp-dev libzip-dev
  libcpp-httplib-dev
  clang libclang-rt-14-dev
  python3 python3-grpcio python3-protobuf python3-numpy python3-pytest python3-sentencepiece
  python3-matplotlib python3-yaml yamllint
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: all dependencies present"
