#!/usr/bin/env bash
# Builds lensd with sanitizers (CUDA off) and runs the tests under them.
#   tools/sanitize.sh asan   AddressSanitizer + UBSan (build-asan): every ctest test, e2e included
#   tools/sanitize.sh tsan   ThreadSanitizer (build-tsan): the threaded tests (scheduler,
#                            tensor-parallel and pipelined engine runs, service streams)
# Reports go to the test logs; the summary prints last. Suppressions: tools/tsan.supp (none
# needed now) and tools/lsan.supp (one-time allocations of the gRPC and protobuf runtimes at exit).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-asan}"
bash tools/setup.sh >/dev/null
case "$MODE" in
  asan) DIR=build-asan; SAN=address,undefined ;;
  tsan) DIR=build-tsan; SAN=thread ;;
  *) echo "usage: tools/sanitize.sh asan|tsan" >&2; exit 2 ;;
esac
cmake -S . -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLENSD_CUDA=OFF \
  -DLENSD_SANITIZE="$SAN" >/dev/null || exit 1
ninja -C "$DIR" -j"${LENSD_JOBS:-2}" || exit 1
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/tools/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="suppressions=$PWD/tools/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
cd "$DIR"
if [ "$MODE" = tsan ]; then
  ctest --output-on-failure -j1 -R 'server_test|runtime_test' --timeout 1800
else
  ctest --output-on-failure -j1 --timeout 1800
fi
rc=$?
echo "sanitize $MODE: ctest exit $rc"
exit $rc
