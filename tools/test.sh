#!/usr/bin/env bash
# The README's test command: set up, build, run every test, print the summaries.
# GPU tests (ctest label `gpu`) skip themselves on machines without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
cd build
ctest --output-on-failure -j2
