#!/usr/bin/env bash
# Installs dependencies (tools/setup.sh), configures and builds lensd into build/.
# ccache keeps rebuilds cheap; -j2 matches the 2-core machines this runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${LENSD_CMAKE_FLAGS:-} >/dev/null
ninja -C build -j"${LENSD_JOBS:-2}"
