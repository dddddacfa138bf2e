#!/usr/bin/env bash
# PatchSweep vs one patch request per cell, and 32 requests on a shared 512-token prefix with
# prefix caching on and off, through `lensd serve` (GPT-2-small shape) on this machine.
# Usage: bench/sweep_bench.sh [build dir] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
PYTHONPATH="$BUILD/python" exec /usr/bin/python3 bench/sweep_bench.py \
  --lensd "$BUILD/server/lensd" --threads "${2:-2}"
